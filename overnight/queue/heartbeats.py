"""Renewing a task's heartbeat, and learning there that the task is no longer the run's.

A preparing or running task has a heartbeat: a key with a TTL, holding its agent's name, that the
agent renews every few seconds (:mod:`overnight.queue.reaper` declares lost a task whose key
expired). While the key holds the agent's name, renewing it is one script call. When it is
missing (it expired: the agent was cut off from Redis or stalled for longer than it lives) or
holds another agent's name, the task's record decides: the key is renewed only while the record
says the run is still the agent's (its agent and attempt, preparing or running), atomically with
that record, so a run whose task was declared lost meanwhile is told so and never revives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import WatchError

from overnight.errors import CorruptRecord, TaskNotFound
from overnight.queue import keys, replies
from overnight.queue.records import ACTIVE_STATUSES

if TYPE_CHECKING:
    from overnight.queue.store import TaskStore

_RENEW_OWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def renew_heartbeat(
    store: TaskStore, task_id: str, agent: str, attempt: int, ttl: float
) -> str | None:
    """Renew ``agent``'s heartbeat of its run (``attempt``) of the task; None while the task
    is still that run's, else what the task is now ("it is queued now, as attempt 2"). A task
    that is gone or unreadable (a Redis that came back empty) is left to run."""
    key = keys.heartbeat(task_id)
    px = max(1, int(ttl * 1000))
    if store.redis.register_script(_RENEW_OWN)(keys=[key], args=[agent, px]) == 1:
        return None
    with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                replies.watch(pipe, keys.task(task_id))
                try:
                    record = store.get(task_id)
                except (TaskNotFound, CorruptRecord):
                    return None
                if record.status in ACTIVE_STATUSES and (record.agent, record.attempt) == (
                    agent,
                    attempt,
                ):
                    pipe.multi()
                    pipe.set(key, agent, px=px)
                    pipe.execute()
                    return None
                break
            except WatchError:
                continue  # the record changed while we read it: read it again
    active = record.status in ACTIVE_STATUSES
    where = f" on agent {record.agent}" if active and record.agent else ""
    return f"it is {record.status.value}{where} now, as attempt {record.attempt + 1}"
