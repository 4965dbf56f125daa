"""Canceling: a task that has not started leaves its queue; a started one is flagged for its agent."""

from __future__ import annotations

import time

from overnight.errors import InvalidTransition, UnknownQueue
from overnight.queue import keys
from overnight.queue.records import ACTIVE_STATUSES, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

_NOT_STARTED = frozenset({TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.HELD})
_FLAG_TTL = 7 * 24 * 3600  # a flag outliving its task (it ended as the flag was set) expires


def request_cancel(store: TaskStore, task_id: str) -> TaskRecord:
    """Queued or waiting: off its queue and ``canceled`` now. Preparing or running: flagged
    for its agent, which stops it. Raises :class:`InvalidTransition` for a finished task."""
    record = store.get(task_id)
    if record.status in _NOT_STARTED:
        try:
            return store.transition(
                task_id, TaskStatus.CANCELED, note="canceled before it started", expect=_NOT_STARTED
            )
        except InvalidTransition:
            record = store.get(task_id)  # an agent took it meanwhile
    if record.status in ACTIVE_STATUSES:
        store.redis.set(keys.cancel(task_id), f"{time.time():.3f}", ex=_FLAG_TTL)
        store.add_note(task_id, f"cancel requested while {record.status.value}")
        store.acks.confirm(store.redis, f"the cancel request of task {task_id}")
        return store.get(task_id)
    raise InvalidTransition(
        f"task {task_id} already {record.status.value}; there is nothing to cancel"
    )


def cancel_queue(store: TaskStore, queue: str) -> list[str]:
    """Cancel every queued or waiting task of ``queue``; returns their ids."""
    known = store.known_queues()
    if queue not in known:
        hint = f"known queues: {', '.join(known)}" if known else "no task was ever enqueued"
        raise UnknownQueue(f"no queue named {queue!r} ({hint})")
    canceled = []
    candidates = store.get_many(store.index.ids(_NOT_STARTED))
    for record in candidates:
        if record.options.queue != queue or record.status not in _NOT_STARTED:
            continue
        try:
            store.transition(
                record.id,
                TaskStatus.CANCELED,
                note=f"queue {queue} canceled",
                expect=_NOT_STARTED,
            )
        except InvalidTransition:
            continue
        canceled.append(record.id)
    return canceled
