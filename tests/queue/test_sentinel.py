from __future__ import annotations

import pytest

from overnight.agent.service.reconnect import Backoff, until_connected
from overnight.config import ClientConfig
from overnight.errors import ConnectionFailed
from overnight.queue.connection import acks_for, connect, redact_url
from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.sentinel import SentinelURL
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.sentinel import SERVICE, SentinelDeployment, sentinel_deployment
from tests.fixtures.services import free_port
from tests.fixtures.tasks import make_snapshot

__all__ = ["sentinel_deployment"]


def test_url_names_sentinels_service_db_and_credentials() -> None:
    url = SentinelURL.parse(
        "redis+sentinel://app:pw@s1:26380,s2,[::1]:5000/jobs/3"
        "?sentinel_password=spw&wait_replicas=2&wait_timeout=0.5"
    )
    assert url.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 5000))
    assert (url.service, url.db, url.username, url.password) == ("jobs", 3, "app", "pw")
    assert url.sentinel_password == "spw"
    acks = url.acks()
    assert (acks.replicas, acks.timeout) == (2, 0.5)


def test_url_defaults_to_db_0_and_one_replica() -> None:
    url = SentinelURL.parse("redis+sentinel://s1/mymaster")
    assert (url.db, url.password, url.wait_replicas) == (0, None, 1)
    assert acks_for("redis+sentinel://s1/mymaster").replicas == 1
    assert acks_for("redis://localhost:6379/0").replicas == 0


@pytest.mark.parametrize(
    ("url", "flaw"),
    [
        ("redis+sentinel:///mymaster", "no Sentinel host"),
        ("redis+sentinel://s1", "/service or /service/db"),
        ("redis+sentinel://s1/m/0/extra", "/service or /service/db"),
        ("redis+sentinel://s1/m/zero", "must be a number"),
        ("redis+sentinel://s1:port/m", "bad Sentinel port"),
        ("redis+sentinel://s1/m?wait_replica=1", "unknown option 'wait_replica'"),
        ("redis+sentinel://s1/m?wait_timeout=-1", "must not be negative"),
    ],
)
def test_a_flawed_url_is_one_line_naming_the_flaw_and_the_form(url: str, flaw: str) -> None:
    with pytest.raises(ConnectionFailed, match="invalid Redis URL") as info:
        connect(url)
    message = str(info.value)
    assert flaw in message and "redis+sentinel://[user:password@]host:port" in message


def test_passwords_of_a_sentinel_url_are_redacted() -> None:
    shown = redact_url("redis+sentinel://app:secret@s1:1,s2:2/m/0?sentinel_password=other")
    assert shown == "redis+sentinel://app:***@s1:1,s2:2/m/0?sentinel_password=***"


def test_no_sentinel_answering_is_a_connection_error_naming_the_service() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/{SERVICE}/0"
    with pytest.raises(
        ConnectionFailed, match=f"cannot reach Redis at .*No master found for '{SERVICE}'"
    ):
        connect(url, timeout=1.0)


@pytest.mark.slow
def test_a_store_through_sentinel_follows_a_failover_and_keeps_acknowledged_tasks(
    sentinel_deployment: SentinelDeployment,
) -> None:
    store = TaskStore.from_config(ClientConfig(redis_url=sentinel_deployment.url))
    try:
        assert store.acks.replicas == 1
        before = submit(store, make_snapshot(), TaskOptions(queue="q"))
        old = sentinel_deployment.kill_master().port
        new = sentinel_deployment.wait_for_failover(old)
        assert new != old
        # The client asks the Sentinels again: the new master has the acknowledged task.
        found = until_connected(lambda: store.get(before.id), Backoff(longest=0.5))
        assert found is not None and found.status is TaskStatus.QUEUED
        after = submit(store, make_snapshot(), TaskOptions(queue="q"))
        assert store.get(after.id).status is TaskStatus.QUEUED
    finally:
        store.redis.close()
