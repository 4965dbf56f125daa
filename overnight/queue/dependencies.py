"""``--after``: tasks that wait for others, and what happens to them when those end.

A task enqueued with ``--after A`` is ``waiting`` (its RQ job deferred, registered as a dependent
of A's job) until A ends. When A finishes the task is queued, its RQ job pushed by overnight
itself; when A fails, is canceled or lost the task is canceled with a note naming A.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.client import Pipeline

from overnight.errors import CorruptRecord, InvalidTransition, TaskNotFound, UsageError
from overnight.queue import keys, replies
from overnight.queue.records import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from overnight.queue.store import TaskStore


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


def release_dependents(store: TaskStore, task_id: str, status: TaskStatus) -> None:
    """Queue or cancel the tasks waiting for ``task_id``, which just reached final ``status``."""
    key = keys.dependents(task_id)
    members = sorted(replies.text(m) for m in store.redis.smembers(key))
    for dependent_id in members:
        try:
            dependent = store.get(dependent_id)
        except (TaskNotFound, CorruptRecord):
            continue
        if dependent.status is not TaskStatus.WAITING:
            continue
        try:
            if status is not TaskStatus.FINISHED:
                store.transition(
                    dependent_id,
                    TaskStatus.CANCELED,
                    note=f"dependency {task_id} {status.value}",
                    expect={TaskStatus.WAITING},
                )
            elif _all_finished(store, dependent, task_id):
                store.transition(
                    dependent_id,
                    TaskStatus.QUEUED,
                    note=f"dependency {task_id} finished",
                    expect={TaskStatus.WAITING},
                )
        except InvalidTransition:
            continue  # canceled or released by someone else meanwhile
    store.redis.delete(key)


def _all_finished(store: TaskStore, dependent: TaskRecord, just_finished: str) -> bool:
    others = [a for a in dependent.options.after if a != just_finished]
    return all(record.status is TaskStatus.FINISHED for record in store.get_many(others))
