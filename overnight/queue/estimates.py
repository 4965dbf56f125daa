"""How long a task is expected to run: its ``--expect``, else learned from finished runs.

A task enqueued with ``--expect 3h`` is expected to run 3 hours. Otherwise the median run time
(``running`` to ``finished``) of the finished tasks of its sweep is used, else that of the
finished tasks of the same command (argv's program part, ``python train.py``, whatever its
params), else nothing is known. A sweep is the tasks of one ``--sweep`` enqueue with their
retries (``record.sweep``). Only the latest
:data:`HISTORY` finished tasks are read, once per :class:`Estimates`.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

from overnight.queue.index import Query
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.params import program_start
from overnight.units import format_duration

HISTORY = 500
"""How many of the latest finished tasks the medians are learned from."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An expected run time and where it comes from."""

    seconds: float
    source: str  # "--expect", "median of 3 finished runs of its sweep", ...

    def describe(self) -> str:
        return f"{format_duration(self.seconds)} ({self.source})"


def command_of(argv: Sequence[str]) -> tuple[str, ...]:
    """What "the same command" compares: the interpreter and script, or the program."""
    return tuple(argv[: program_start(argv)])


class Estimates:
    """Expected run times, learned from the finished tasks Redis holds now."""

    def __init__(self, store: TaskStore, *, history: int = HISTORY) -> None:
        self._store = store
        self._history = history
        self._runs: list[TaskRecord] | None = None

    def of(self, record: TaskRecord) -> Estimate | None:
        """The task's expected run time; None when it gave none and nothing like it finished."""
        if record.options.expect is not None:
            return Estimate(record.options.expect, "--expect")
        runs = self._finished()
        same_sweep = [_run_time(r) for r in runs if record.sweep and r.sweep == record.sweep]
        if same_sweep:
            return _median(same_sweep, "its sweep")
        command = command_of(record.argv)
        same_command = [_run_time(r) for r in runs if command_of(r.argv) == command]
        if command and same_command:
            return _median(same_command, f"`{' '.join(command)}`")
        return None

    def _finished(self) -> list[TaskRecord]:
        if self._runs is None:
            found = self._store.find(
                Query(statuses=frozenset({TaskStatus.FINISHED}), limit=self._history)
            )
            self._runs = [r for r in found if r.started is not None and r.ended is not None]
        return self._runs


def _run_time(record: TaskRecord) -> float:
    assert record.started is not None and record.ended is not None
    return max(0.0, record.ended - record.started)


def _median(times: list[float], of: str) -> Estimate:
    runs = "run" if len(times) == 1 else "runs"
    return Estimate(statistics.median(times), f"median of {len(times)} finished {runs} of {of}")
