"""Fields side by side, from records and specs built by hand."""

from __future__ import annotations

import dataclasses

from overnight.comparison.fields import Row, Run, rows
from overnight.metrics.summary import MetricSummary
from overnight.queue.records import TaskOptions, TaskRecord, TaskStatus
from tests.fixtures.tasks import make_snapshot


def run(task_id: str, **fields: object) -> Run:
    record = TaskRecord(id=task_id, spec_id="s" * 64, options=TaskOptions(), **fields)  # type: ignore[arg-type]
    spec = make_snapshot().spec
    return Run(record, dataclasses.replace(spec, env={"SEED": "1", "HF_HOME": "/x"}))


def by_field(found: list[Row]) -> dict[str, tuple[str, ...]]:
    return {row.field: row.values for row in found}


def test_metrics_show_each_part_with_its_step_and_blank_where_missing() -> None:
    loss = MetricSummary(last=0.25, min=0.2, max=2.5, count=10, last_step=900, min_step=800)
    found = by_field(rows([run("a", metrics={"loss": loss}), run("b")]))
    assert found["loss last"] == ("0.25 @ 900", "")
    assert found["loss min"] == ("0.2 @ 800", "")
    assert found["loss max"] == ("2.5", "")


def test_hardware_names_the_gpus_and_driver() -> None:
    two = {"host": "box", "gpu_model": "NVIDIA H200", "gpu_count": 2, "driver_version": "550"}
    mixed = {"gpu_model": "1x NVIDIA A100, 1x Tesla T4", "gpu_count": 2}
    found = by_field(
        rows([run("a", extra={"hardware": two}), run("b", extra={"hardware": mixed}), run("c")])
    )
    assert found["gpu"] == ("2x NVIDIA H200", "1x NVIDIA A100, 1x Tesla T4", "")
    assert found["driver"] == ("550", "", "")
    assert found["host"] == ("box", "", "")


def test_env_is_compared_by_name_only_and_rows_know_when_they_differ() -> None:
    found = rows(
        [
            run("a", status=TaskStatus.FINISHED, started=10.0, ended=75.0, exit_code=0),
            run("b", status=TaskStatus.FAILED, started=10.0, ended=12.5, exit_code=1),
        ]
    )
    values = by_field(found)
    assert values["env"] == ("HF_HOME SEED", "HF_HOME SEED")
    assert values["duration"] == ("1m05s", "2.5s") and values["exit code"] == ("0", "1")
    changed = {row.field for row in found if row.changed}
    assert {"status", "duration", "exit code"} <= changed and "env" not in changed
