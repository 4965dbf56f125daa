"""Lost tasks: a preparing or running task whose heartbeat expired lost its agent.

Every agent heartbeats its tasks (a key with a TTL). Any process may reap: every ``overnight``
command does, and so do agents, so a dead agent's tasks are noticed without waiting for RQ's
maintenance. Reaping costs one read of the small active sets and one EXISTS per active task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overnight.errors import CorruptRecord, InvalidTransition, TaskNotFound
from overnight.queue.records import Phase, TaskStatus

if TYPE_CHECKING:
    from overnight.queue.store import TaskStore

ACTIVE = frozenset({TaskStatus.PREPARING, TaskStatus.RUNNING})


def reap_lost(store: TaskStore) -> list[str]:
    """Mark tasks without a heartbeat ``lost``; requeue those with retries left. Returns their ids."""
    from overnight.queue import keys

    ids = store.index.ids(ACTIVE)
    if not ids:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.exists(keys.heartbeat(task_id))
    silent = [task_id for task_id, alive in zip(ids, pipe.execute(), strict=True) if not alive]
    lost = []
    for task_id in silent:
        try:
            record = store.get(task_id)
        except (TaskNotFound, CorruptRecord):
            continue
        agent = f"agent {record.agent}" if record.agent else "its agent"
        retry = record.attempt < record.options.retries
        try:
            record = store.transition(
                task_id,
                TaskStatus.LOST,
                note=f"{agent} stopped sending heartbeats",
                expect=ACTIVE,
                only_if_silent=True,
                release=not retry,
                phase=Phase.AGENT,
                error=f"{agent} vanished while the task was {record.status.value}",
            )
        except InvalidTransition:
            continue  # it heartbeated or ended meanwhile, or another process reaped it
        lost.append(task_id)
        if retry:
            store.requeue(
                task_id,
                note=f"attempt {record.attempt + 2} of {record.options.retries + 1}, "
                f"after {agent} vanished",
                new_attempt=True,
            )
    return lost
