"""The leaderboard table: metric columns, sort keys, CSV (the commands' tests run it on Redis)."""

from __future__ import annotations

import csv
import io

import pytest

from overnight.commands.leaderboard import (
    MetricColumn,
    SortKey,
    arrange,
    format_value,
    short_note,
    sort_records,
    to_csv,
)
from overnight.errors import UsageError
from overnight.metrics.summary import MetricSummary
from overnight.queue.records import TaskOptions, TaskRecord


def task(task_id: str, params: dict[str, str] | None = None, **losses: float) -> TaskRecord:
    """A record whose metric NAME went from 1.0 down to ``losses[NAME]``."""
    metrics = {n: MetricSummary.first(1.0).updated(v) for n, v in losses.items()}
    return TaskRecord(
        id=task_id, spec_id="s", options=TaskOptions(), params=params or {}, metrics=metrics
    )


def test_metric_columns_parse_last_min_and_max() -> None:
    assert MetricColumn.parse("loss") == MetricColumn("loss", "last")
    assert MetricColumn.parse("val/loss:min") == MetricColumn("val/loss", "min")
    assert MetricColumn.parse("acc:max").label == "acc:max"
    assert MetricColumn.parse("a:b") == MetricColumn("a:b", "last")  # not a stat: part of the name
    record = task("a", loss=0.25)
    assert [MetricColumn("loss", s).value(record) for s in ("last", "min", "max")] == [
        0.25,
        0.25,
        1.0,
    ]
    assert MetricColumn("acc").value(record) is None
    with pytest.raises(UsageError, match="NAME:min"):
        MetricColumn.parse(":min")


def test_sort_by_a_metric_puts_tasks_without_it_last_either_way() -> None:
    records = [task("none"), task("b", loss=0.5), task("a", loss=0.1), task("c", loss=0.9)]
    assert [r.id for r in sort_records(records, SortKey.parse("loss"))] == ["a", "b", "c", "none"]
    assert [r.id for r in sort_records(records, SortKey.parse("-loss"))] == ["c", "b", "a", "none"]
    assert [r.id for r in sort_records(records, SortKey.parse("-loss:max"))][-1] == "none"


def test_sort_by_a_param_numerically_when_all_are_numbers_and_by_duration() -> None:
    records = [task("x", {"lr": "0.1"}), task("y", {"lr": "1e-3"}), task("z", {"lr": "10"})]
    assert [r.id for r in sort_records(records, SortKey("lr"))] == ["y", "x", "z"]
    words = [task("x", {"opt": "sgd"}), task("y", {"opt": "adam"}), task("z")]
    assert [r.id for r in sort_records(words, SortKey("opt"))] == ["y", "x", "z"]
    timed = [task("slow"), task("quick"), task("never")]
    timed[0].started, timed[0].ended = 10.0, 100.0
    timed[1].started, timed[1].ended = 10.0, 20.0
    assert [r.id for r in sort_records(timed, SortKey("duration"))] == ["quick", "slow", "never"]


def test_an_unknown_sort_key_names_the_metrics_and_params_there_are() -> None:
    records = [task("a", {"lr": "0.1"}, loss=0.1, acc=0.5)]
    with pytest.raises(UsageError) as caught:
        sort_records(records, SortKey.parse("-lss"))
    message = str(caught.value)
    assert "'lss'" in message and "metrics: acc, loss" in message and "params: lr" in message
    assert "\n" not in message
    assert sort_records([], SortKey("lss")) == []  # nothing selected: nothing to complain about
    many = [task("a")]
    many[0].metrics = {f"m{i:02}": MetricSummary.first(0.5) for i in range(25)}
    with pytest.raises(UsageError, match="m19 and 5 more; params: none"):
        sort_records(many, SortKey("lss"))


def test_arrange_adds_the_sort_metric_and_warns_of_missing_ones() -> None:
    records = [task("a", loss=0.3), task("b", loss=0.1), task("c", loss=0.2)]
    board = arrange(records, sort="loss:min", metrics=["acc", "loss"], limit=2)
    assert [r.id for r in board.records] == ["b", "c"]
    assert [c.label for c in board.columns] == ["acc", "loss", "loss:min"]
    assert board.warning is not None and "acc" in board.warning and "loss" in board.warning
    plain = arrange(records, sort=None, metrics=[])
    assert [r.id for r in plain.records] == ["a", "b", "c"] and plain.warning is None


def test_csv_flattens_params_and_metrics_and_keeps_task_text_on_one_line() -> None:
    rows = [
        {"id": "a", "params": {"lr": "0.1"}, "metrics": {"loss": 0.5}, "note": "x\x1b]52;\ny"},
        {"id": "b", "params": {"bs": "32"}, "metrics": {"loss": None}, "note": ""},
        {"id": "c", "params": {"x\x1b[2J": "1"}},
    ]
    text = to_csv(rows)
    assert text.splitlines()[0] == "id,params.lr,metrics.loss,note,params.bs,params.x\\x1b[2J"
    read = list(csv.DictReader(io.StringIO(text)))
    assert read[0] == {"id": "a", "params.lr": "0.1", "metrics.loss": "0.5",
                       "note": "x\\x1b]52;\\ny", "params.bs": "", "params.x\\x1b[2J": ""}  # fmt: skip
    assert read[1]["metrics.loss"] == "" and read[1]["params.bs"] == "32"
    assert len(text.splitlines()) == 4 and "\x1b" not in text


def test_values_and_notes_as_shown() -> None:
    assert format_value(None) == "-"
    assert format_value(0.123456789) == "0.123457"
    assert format_value(3.0) == "3"
    assert short_note("first line\nsecond") == "first line"
    assert short_note("x" * 40) == "x" * 29 + "…"
