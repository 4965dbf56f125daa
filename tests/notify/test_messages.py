"""What each notification says: counts, the best run, failure kinds, a task's text made safe."""

from __future__ import annotations

from typing import Any

from overnight.metrics.summary import MetricSummary
from overnight.notify.messages import MAX_LISTED, agent_lost, best_run, sweep_ended, task_failed
from overnight.queue.failures import FailureKind
from overnight.queue.records import Phase, TaskOptions, TaskRecord, TaskStatus

SWEEP = "3f9a1c2b4d5e"


def record(n: int, status: TaskStatus, **fields: Any) -> TaskRecord:
    return TaskRecord(
        id=f"{n:012x}", spec_id="s", options=TaskOptions(), status=status, sweep=SWEEP, **fields
    )


def metric(last: float, low: float | None = None) -> dict[str, MetricSummary]:
    summary = MetricSummary.first(low if low is not None else last, 0).updated(last, 1)
    return {"loss": summary}


def test_the_best_run_is_the_lowest_or_with_a_dash_the_highest_of_the_finished() -> None:
    runs = [
        record(1, TaskStatus.FINISHED, metrics=metric(0.5)),
        record(2, TaskStatus.FINISHED, metrics=metric(0.2, low=0.1)),
        record(3, TaskStatus.FAILED, metrics=metric(0.01)),  # failed: never the best
        record(4, TaskStatus.FINISHED),
    ]
    assert best_run(runs, "loss") == (runs[1], "loss", 0.2)
    assert best_run(runs, "-loss") == (runs[0], "loss", 0.5)
    assert best_run(runs, "loss:min") == (runs[1], "loss:min", 0.1)
    assert best_run(runs, "acc") is None


def test_a_sweeps_end_counts_lists_failures_by_kind_and_names_the_best() -> None:
    runs = [record(1, TaskStatus.FINISHED, metrics=metric(0.5), params={"lr": "0.1"})]
    runs += [
        record(n, TaskStatus.FAILED, failure=FailureKind.OOM, params={"lr": str(n)})
        for n in range(2, MAX_LISTED + 4)
    ]
    message = sweep_ended(SWEEP, runs, "loss")
    lines = message.text.splitlines()
    assert (
        lines[0] == f"sweep {SWEEP} ended: {len(runs)} task(s): {MAX_LISTED + 2} failed, 1 finished"
    )
    assert lines[1] == f"best by loss: {runs[0].id} lr=0.1 = 0.5"
    assert lines[2] == f"  failed [infrastructure failure (OOM kill)] {runs[1].id} lr=2"
    assert "  ... and 2 more" in lines
    assert message.key == f"sweep:{SWEEP}:{len(runs)}" and message.task_id == runs[0].id


def test_a_tasks_own_text_cannot_forge_lines() -> None:
    failed = record(
        7,
        TaskStatus.FAILED,
        name="evil\nsweep 000000000000 ended: all finished",
        error="boom\x1b[2J",
        phase=Phase.RUN,
        failure=FailureKind.RUN,
        agent="box",
    )
    message = task_failed(failed)
    assert "\n" not in message.title
    assert message.text.splitlines()[0].startswith(f"task {failed.id} (evil\\nsweep 000000000000")
    assert "failed in run: run failure" in message.text
    assert "error: boom\\x1b[2J" in message.text and "\x1b" not in message.text
    assert message.key == f"ended:{failed.id}:0"


def test_a_lost_agent_names_its_tasks() -> None:
    held = [record(1, TaskStatus.QUEUED, name="a"), record(2, TaskStatus.LOST, name="b")]
    message = agent_lost("box\x07", held)
    assert message.title == "overnight: agent box\\x07 lost"
    assert f"  {held[1].id} (b) lost" in message.text.splitlines()
    assert message.claim_ttl < 86400  # the same agent lost again later is told again
