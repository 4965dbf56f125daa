from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from overnight.errors import InvalidTransition
from overnight.queue import keys
from overnight.queue.cancel import request_cancel
from overnight.queue.failures import FailureKind
from overnight.queue.reaper import reap_lost, reap_restarted
from overnight.queue.records import Change, Phase, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.services import RedisServer, free_port
from tests.fixtures.tasks import make_snapshot


def _expire(redis_client: redis.Redis, task_id: str) -> None:
    redis_client.delete(keys.heartbeat(task_id))


def test_task_whose_heartbeat_expires_is_lost(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"), heartbeat_ttl=0.05)
    time.sleep(0.1)
    assert reap_lost(store, settle=0) == [record.id]
    lost = store.get(record.id)
    assert lost.status is TaskStatus.LOST and lost.phase is Phase.AGENT
    assert lost.failure is FailureKind.INFRA
    assert lost.history[-1].note == "agent box stopped sending heartbeats"
    assert reap_lost(store, settle=0) == []


def test_a_lost_task_is_not_retried_when_retry_on_leaves_infra_out(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(retries=2, retry_on=("run",)))
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    _expire(redis_client, record.id)
    assert reap_lost(store, settle=0) == [record.id]
    lost = store.get(record.id)
    assert (lost.status, lost.attempt, lost.failure) == (TaskStatus.LOST, 0, FailureKind.INFRA)


def test_live_heartbeat_is_left_alone(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="box"))
    store.heartbeat(record.id, "box", ttl=60)
    assert reap_lost(store, settle=0) == []
    assert store.get(record.id).status is TaskStatus.PREPARING


def test_lost_task_with_retries_is_requeued_as_a_new_attempt(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu", retries=1))
    dependent = submit(store, make_snapshot(), TaskOptions(queue="gpu", after=(record.id,)))
    redis_client.lpop("rq:queue:gpu")
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    _expire(redis_client, record.id)
    assert reap_lost(store, settle=0) == [record.id]
    again = store.get(record.id)
    assert again.status is TaskStatus.QUEUED and again.attempt == 1
    assert [h.status for h in again.history][-2:] == [TaskStatus.LOST, TaskStatus.QUEUED]
    assert "attempt 2 of 2" in again.history[-1].note
    assert redis_client.lrange("rq:queue:gpu", 0, -1) == [record.id.encode()]
    assert store.get(dependent.id).status is TaskStatus.WAITING  # not canceled: it will rerun

    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box2"))
    _expire(redis_client, record.id)
    reap_lost(store, settle=0)
    assert store.get(record.id).status is TaskStatus.LOST  # retries used up
    assert store.get(dependent.id).status is TaskStatus.CANCELED


def test_a_lost_task_with_retries_goes_back_to_the_front_of_its_queue(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu", retries=1))
    redis_client.lpop("rq:queue:gpu")
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    behind = [submit(store, make_snapshot(), TaskOptions(queue="gpu")) for _ in range(2)]
    _expire(redis_client, record.id)
    assert reap_lost(store, settle=0) == [record.id]
    assert redis_client.lrange("rq:queue:gpu", 0, -1) == [t.id.encode() for t in (record, *behind)]


def test_a_restarted_agent_loses_its_earlier_runs_tasks_at_once(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    """Heartbeats still alive, but the agent of that name is starting again: they are lost."""
    retried = submit(store, make_snapshot(), TaskOptions(queue="gpu", retries=1))
    dependent = submit(store, make_snapshot(), TaskOptions(queue="gpu", after=(retried.id,)))
    preparing = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    adopted = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    others = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    redis_client.delete("rq:queue:gpu")
    store.transition(retried.id, TaskStatus.RUNNING, Change(agent="box"), heartbeat_ttl=60)
    store.transition(preparing.id, TaskStatus.PREPARING, Change(agent="box"), heartbeat_ttl=60)
    store.transition(adopted.id, TaskStatus.RUNNING, Change(agent="box"), heartbeat_ttl=60)
    store.transition(others.id, TaskStatus.RUNNING, Change(agent="box-2"), heartbeat_ttl=60)
    assert reap_lost(store, settle=0) == []  # their heartbeats say nothing is wrong

    assert sorted(reap_restarted(store, "box", keep={adopted.id})) == sorted(
        [retried.id, preparing.id]
    )
    again = store.get(retried.id)
    assert again.status is TaskStatus.QUEUED and again.attempt == 1
    assert [h.note for h in again.history][-2:] == [
        "agent box restarted while the task was running",
        "attempt 2 of 2, after agent box died",
    ]
    assert redis_client.lrange("rq:queue:gpu", 0, -1) == [retried.id.encode()]
    assert store.get(dependent.id).status is TaskStatus.WAITING
    lost = store.get(preparing.id)
    assert (lost.status, lost.phase) == (TaskStatus.LOST, Phase.AGENT)
    assert lost.error == "agent box died while the task was preparing"
    assert not redis_client.exists(keys.heartbeat(preparing.id))
    assert store.get(adopted.id).status is TaskStatus.RUNNING
    assert store.get(others.id).status is TaskStatus.RUNNING
    assert reap_restarted(store, "box", keep={adopted.id}) == []


def test_a_task_that_changed_hands_is_not_lost_by_its_former_agent(store: TaskStore) -> None:
    """The agent check is atomic with the change: a task another agent took meanwhile stays."""
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box-2"))
    with pytest.raises(InvalidTransition, match="not agent box's now"):
        store.transition(record.id, TaskStatus.LOST, expect={TaskStatus.RUNNING}, held_by="box")
    assert store.get(record.id).status is TaskStatus.RUNNING


@pytest.mark.slow
def test_nothing_is_reaped_while_a_restarted_redis_settles(tmp_path: Path) -> None:
    """Down longer than heartbeats live, Redis comes back with all of them expired: agents get
    ``settle`` seconds to reconnect before their silence counts."""
    server = RedisServer(port=free_port(), workdir=tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        store = TaskStore(client)
        record = submit(store, make_snapshot(), TaskOptions())
        store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"), heartbeat_ttl=0.5)
        client.shutdown(save=True)
        assert server.proc is not None
        server.proc.wait(10)
        time.sleep(1.0)  # down for longer than the heartbeat lives
        server.start()
        assert not client.exists(keys.heartbeat(record.id))
        assert reap_lost(store, settle=2.0) == []  # its agent may still be reconnecting
        assert store.get(record.id).status is TaskStatus.RUNNING
        time.sleep(2.0)
        assert reap_lost(store, settle=2.0) == [record.id]  # it did not come back
    finally:
        client.close()
        server.stop()


def test_a_lost_task_whose_cancel_was_requested_is_canceled_not_retried(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(retries=3))
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    request_cancel(store, record.id)  # flagged for box, which vanishes before it sees the flag
    _expire(redis_client, record.id)
    assert reap_lost(store, settle=0) == [record.id]
    canceled = store.get(record.id)
    assert (canceled.status, canceled.attempt, canceled.error) == (TaskStatus.CANCELED, 0, None)
    assert canceled.history[-1].note == (
        "agent box stopped sending heartbeats; canceled as requested, not run again"
    )
    assert redis_client.llen("rq:queue:default") == 0
