from __future__ import annotations

import signal
import time

import pytest
import redis

from overnight.queue import keys
from overnight.queue.cancel import request_cancel
from overnight.queue.connection import acks_for, connect
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.replication import Acks
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.sentinel import SentinelDeployment, sentinel_deployment
from tests.fixtures.tasks import make_snapshot

__all__ = ["sentinel_deployment"]


def test_without_replicas_a_wait_times_out_warns_and_later_writes_do_not_wait(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    acks = Acks(replicas=1, timeout=0.2)
    try:
        started = time.monotonic()
        assert not acks.confirm(client, "the write")
        assert time.monotonic() - started >= 0.2  # a real WAIT, answered by the timeout
        assert "the write reached 0 of 1 replicas" in caplog.text
        started = time.monotonic()
        assert not acks.confirm(client, "the next write")
        assert time.monotonic() - started < 0.15 and not acks.waiting
    finally:
        client.close()


def test_a_plain_url_never_waits(redis_url: str) -> None:
    acks = acks_for(redis_url)
    assert not acks.waiting
    client = redis.Redis.from_url(redis_url)
    try:
        assert acks.confirm(client, "a write")
        assert client.get("overnight:replication") is None  # not even the marker is written
    finally:
        client.close()


@pytest.mark.slow
def test_submissions_status_changes_and_log_batches_wait_for_the_replica(
    sentinel_deployment: SentinelDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    url = sentinel_deployment.url + "?wait_timeout=0.3"
    client = connect(url)
    replica = sentinel_deployment.servers[1].client()

    def fresh() -> TaskStore:  # a store whose writes wait, as every new one does
        return TaskStore(client, acks=acks_for(url))

    try:
        record = submit(fresh(), make_snapshot(), TaskOptions(queue="q"))
        fresh().logs.append(record.id, [(time.time(), "a line")])
        fresh().transition(record.id, TaskStatus.CANCELED)
        assert "replicas" not in caplog.text  # each was acknowledged
        assert replica.exists(keys.task(record.id))
        sentinel_deployment.servers[1].stop(signal.SIGKILL)
        store = fresh()
        again = submit(store, make_snapshot(), TaskOptions(queue="q"))
        assert "submission of 1 task(s) reached 0 of 1 replicas within 0.3 s" in caplog.text
        assert not store.acks.waiting  # the next writes go on unconfirmed for a while
        fresh().logs.append(again.id, [(time.time(), "a line")])
        assert f"task {again.id}'s log batch reached 0 of 1" in caplog.text
        fresh().transition(again.id, TaskStatus.PREPARING, Change(agent="box"))
        assert f"task {again.id}'s change to preparing reached 0 of 1" in caplog.text
        request_cancel(fresh(), again.id)
        assert f"the cancel request of task {again.id} reached 0 of 1" in caplog.text
    finally:
        replica.close()
        client.close()
