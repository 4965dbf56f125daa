from __future__ import annotations

import time

import redis

from overnight.queue import keys
from overnight.queue.records import Phase, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.tasks import make_snapshot


def _expire(redis_client: redis.Redis, task_id: str) -> None:
    redis_client.delete(keys.heartbeat(task_id))


def test_task_whose_heartbeat_expires_is_lost(store: TaskStore) -> None:
    record = store.submit(make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, agent="box", heartbeat_ttl=0.05)
    time.sleep(0.1)
    assert store.reap_lost() == [record.id]
    lost = store.get(record.id)
    assert lost.status is TaskStatus.LOST and lost.phase is Phase.AGENT
    assert lost.history[-1].note == "agent box stopped sending heartbeats"
    assert store.reap_lost() == []


def test_live_heartbeat_is_left_alone(store: TaskStore) -> None:
    record = store.submit(make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.PREPARING, agent="box")
    store.heartbeat(record.id, "box", ttl=60)
    assert store.reap_lost() == []
    assert store.get(record.id).status is TaskStatus.PREPARING


def test_lost_task_with_retries_is_requeued_as_a_new_attempt(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = store.submit(make_snapshot(), TaskOptions(queue="gpu", retries=1))
    dependent = store.submit(make_snapshot(), TaskOptions(queue="gpu", after=(record.id,)))
    redis_client.lpop("rq:queue:gpu")
    store.transition(record.id, TaskStatus.RUNNING, agent="box")
    _expire(redis_client, record.id)
    assert store.reap_lost() == [record.id]
    again = store.get(record.id)
    assert again.status is TaskStatus.QUEUED and again.attempt == 1
    assert [h.status for h in again.history][-2:] == [TaskStatus.LOST, TaskStatus.QUEUED]
    assert "attempt 2 of 2" in again.history[-1].note
    assert redis_client.lrange("rq:queue:gpu", 0, -1) == [record.id.encode()]
    assert store.get(dependent.id).status is TaskStatus.WAITING  # not canceled: it will rerun

    store.transition(record.id, TaskStatus.RUNNING, agent="box2")
    _expire(redis_client, record.id)
    store.reap_lost()
    assert store.get(record.id).status is TaskStatus.LOST  # retries used up
    assert store.get(dependent.id).status is TaskStatus.CANCELED
