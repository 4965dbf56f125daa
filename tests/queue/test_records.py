from __future__ import annotations

import json

import pytest

from overnight.errors import CorruptRecord
from overnight.metrics.summary import MetricSummary
from overnight.queue.records import Phase, StatusChange, TaskOptions, TaskRecord, TaskStatus


def test_record_round_trip() -> None:
    rec = TaskRecord(
        id="abc",
        spec_id="s" * 64,
        options=TaskOptions(queue="gpu", gpus=2, after=("x",)),
        status=TaskStatus.FAILED,
        history=[StatusChange(TaskStatus.QUEUED, 1.0)],
        phase=Phase.RUN,
        error="exit code 3",
    )
    assert TaskRecord.from_json(rec.to_json()) == rec


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b"null",
        b'"text"',
        b'{"id": "x"}',
        b'{"id":"x","spec_id":"y","options":{},"status":"bogus"}',
        b'{"id":"x","spec_id":"y","options":[],"status":"queued"}',
        b"\xff\xfe garbage",
    ],
)
def test_corrupt_records_raise_one_error_type(raw: bytes) -> None:
    with pytest.raises(CorruptRecord):
        TaskRecord.from_json(raw)


def test_final_statuses() -> None:
    assert TaskStatus.LOST.is_final and not TaskStatus.RUNNING.is_final


def test_json_leaves_defaults_out_and_round_trips() -> None:
    rec = TaskRecord(id="abc", spec_id="s", options=TaskOptions(queue="gpu"))
    text = rec.to_json()
    assert "image" not in text and "error" not in text and '"queue":"gpu"' in text
    assert TaskRecord.from_json(text) == rec


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("started", "yesterday"),
        ("exit_code", "0"),
        ("argv", "python train.py"),
        ("params", {"lr": 1}),
        ("agent", 7),
        ("history", [{"status": "queued"}]),
        ("options", {"queue": "gpu", "timeout": "8h"}),
        ("options", {"queue": 3}),
        ("notes", [None]),
        ("params", [["lr", "1"]]),
        ("created", float("nan")),
        ("started", float("inf")),
        ("ended", 1e300),
        ("history", [{"status": "queued", "at": -5}]),
        ("options", {"queue": "gpu", "timeout": float("nan")}),
        ("extra", [["a", 1]]),
        ("extra", {"resources": "high"}),
        ("extra", {"resources": {"summary": {"cpu_pct": {"peak": "high", "mean": 1}}}}),
        ("extra", {"resources": {"summary": {"cpu_pct": {"mean": 1}}}}),
        ("extra", {"resources": {"off": {"gpu": 5}}}),
        ("metrics", [["loss", 1]]),
        ("sweep", "../../etc"),
        ("sweep", "3F9A1C2B7D4E"),
        ("sweep", 7),
        ("note", ["baseline"]),
        ("metrics", {"loss": 0.5}),
        ("metrics", {"loss": {"last": 0.5, "min": 0.5}}),
        ("metrics", {"loss": {"last": 0.5, "min": 0.5, "max": "high"}}),
    ],
)
def test_wrongly_typed_fields_are_corrupt(field: str, value: object) -> None:
    data = json.loads(TaskRecord(id="abc", spec_id="s", options=TaskOptions()).to_json())
    data[field] = value
    with pytest.raises(CorruptRecord):
        TaskRecord.from_json(json.dumps(data))


def test_a_resource_report_as_the_monitor_writes_it_is_kept() -> None:
    report = {"summary": {"cpu_pct": {"peak": 90.0, "mean": 40.5, "last": 3, "samples": 7}},
              "series": {"cpu_pct": [[0.0, 1.0]]}, "off": {"gpu": "no NVIDIA driver"}}  # fmt: skip
    rec = TaskRecord(id="abc", spec_id="s", options=TaskOptions(), extra={"resources": report})
    assert TaskRecord.from_json(rec.to_json()).extra == {"resources": report}


def test_metric_summaries_round_trip_compactly() -> None:
    metrics = {
        "loss": MetricSummary.first(0.5, step=3).updated(0.25, step=4),
        "acc": MetricSummary.first(1),
    }
    rec = TaskRecord(id="abc", spec_id="s", options=TaskOptions(), metrics=metrics)
    text = rec.to_json()
    assert '"acc":{"last":1.0,"min":1.0,"max":1.0,"count":1}' in text
    assert TaskRecord.from_json(text).metrics == metrics
    assert "metrics" not in TaskRecord(id="abc", spec_id="s", options=TaskOptions()).to_json()
