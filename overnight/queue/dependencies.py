"""``--after``: tasks that wait for others, and what happens to them when those end.

A task enqueued with ``--after A`` is ``waiting`` (its RQ job deferred, registered as a dependent
of A's job) until A ends. When A finishes the task is queued, its RQ job pushed by overnight
itself; when A fails, is canceled or lost the task is canceled with a note naming A. The store
applies :func:`released` when a task ends, in :meth:`TaskStore.transition`.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.client import Pipeline

from overnight.errors import TaskNotFound, UsageError
from overnight.queue import keys, replies
from overnight.queue.records import TaskRecord, TaskStatus


def finished_dependencies(pipe: Pipeline, after: Sequence[str]) -> set[str]:
    """Watch the tasks in ``after`` and return those already finished.

    Raises :class:`TaskNotFound` for an unknown id and :class:`UsageError` for a task that ended
    without finishing (the new task could never start).
    """
    if not after:
        return set()
    task_keys = [keys.task(a) for a in after]
    replies.watch(pipe, *task_keys)
    finished = set()
    for task_id, raw in zip(after, pipe.mget(task_keys), strict=True):
        if raw is None:
            raise TaskNotFound(f"--after {task_id}: no such task; `overnight ls` lists tasks")
        record = TaskRecord.from_json(raw)
        if record.status is TaskStatus.FINISHED:
            finished.add(task_id)
        elif record.status.is_final:
            raise UsageError(
                f"--after {task_id}: that task already ended {record.status.value}, so this one "
                "could never start; retry it first (`overnight retry`) and wait for the new id"
            )
    return finished


def released(
    dependent: TaskRecord, task_id: str, status: TaskStatus, others: Sequence[TaskRecord]
) -> tuple[TaskStatus, str] | None:
    """Where ``dependent`` goes now that ``task_id`` reached final ``status``, with the note to
    record; None when it stays (not waiting, or still waiting for ``others``, the records of
    the other tasks it waits for that still exist, read when ``status`` is finished)."""
    if dependent.status is not TaskStatus.WAITING:
        return None
    if status is not TaskStatus.FINISHED:
        return TaskStatus.CANCELED, f"dependency {task_id} {status.value}"
    if any(record.status is not TaskStatus.FINISHED for record in others):
        return None
    return TaskStatus.QUEUED, f"dependency {task_id} finished"
