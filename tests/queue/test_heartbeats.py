"""Renewing heartbeats: the run learns when its task is no longer its own, and never revives it."""

from __future__ import annotations

import redis

from overnight.queue import keys
from overnight.queue.heartbeats import renew_heartbeat
from overnight.queue.reaper import reap_lost
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.tasks import make_snapshot


def _expire(redis_client: redis.Redis, task_id: str) -> None:
    redis_client.delete(keys.heartbeat(task_id))


def test_renewing_a_heartbeat_says_when_the_run_is_no_longer_the_agents(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(retries=2))
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    assert renew_heartbeat(store, record.id, "box", 0, ttl=60) is None
    # box is cut off: its heartbeat expires, the task is reaped and requeued...
    _expire(redis_client, record.id)
    assert reap_lost(store, settle=0) == [record.id]
    assert renew_heartbeat(store, record.id, "box", 0, ttl=60) == "it is queued now, as attempt 2"
    assert not redis_client.exists(keys.heartbeat(record.id))  # a queued task has none
    # ... and taken by another agent
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="box-2"))
    assert (
        renew_heartbeat(store, record.id, "box", 0, ttl=60)
        == "it is preparing on agent box-2 now, as attempt 2"
    )
    assert renew_heartbeat(store, record.id, "box-2", 1, ttl=60) is None
    # A heartbeat that expired while the run is still the agent's: renewed, nothing else.
    _expire(redis_client, record.id)
    assert renew_heartbeat(store, record.id, "box-2", 1, ttl=60) is None
    assert redis_client.get(keys.heartbeat(record.id)) == b"box-2"
    # A task that is gone (a Redis that came back empty) is left to run.
    assert renew_heartbeat(store, "0123456789ab", "box", 0, ttl=60) is None


def test_another_agents_heartbeat_is_never_overwritten(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box-2"))
    assert renew_heartbeat(store, record.id, "box", 0, ttl=60) == (
        "it is running on agent box-2 now, as attempt 1"
    )
    assert redis_client.get(keys.heartbeat(record.id)) == b"box-2"


def test_a_task_that_ended_gets_no_heartbeat_back(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    """The run's own end was written a moment before the renewal: nothing comes back to life."""
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    store.transition(record.id, TaskStatus.FINISHED, Change(agent="box"))
    assert renew_heartbeat(store, record.id, "box", 0, ttl=60) == (
        "it is finished now, as attempt 1"
    )
    assert not redis_client.exists(keys.heartbeat(record.id))
