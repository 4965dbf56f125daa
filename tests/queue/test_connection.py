from __future__ import annotations

from pathlib import Path

import pytest

from overnight.errors import ConnectionFailed
from overnight.queue.connection import connect, persistence_warning, redact_url
from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.redis_urls import PASSWORD, USER, SecuredRedis
from tests.fixtures.services import RedisServer, free_port
from tests.fixtures.tasks import make_snapshot


def test_connect_pings(redis_url: str) -> None:
    client = connect(redis_url)
    assert client.ping()
    client.close()


def test_unreachable_names_url_without_password() -> None:
    url = f"redis://alice:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConnectionFailed) as info:
        connect(url, timeout=1.0)
    message = str(info.value)
    assert "s3cret" not in message
    assert f"redis://alice:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "\n" not in message


def test_invalid_url_is_a_connection_error() -> None:
    with pytest.raises(ConnectionFailed, match="invalid Redis URL"):
        connect("http://example.invalid")


def test_redact_url() -> None:
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact_url("rediss://u:p@h:1/2") == "rediss://u:***@h:1/2"
    assert redact_url("redis://:p@h/0") == "redis://:***@h/0"
    assert redact_url("redis://u:p@ss@h/0") == "redis://u:***@h/0"
    assert redact_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"
    assert (
        redact_url("unix:///run/r.sock?db=0&password=x") == "unix:///run/r.sock?db=0&password=***"
    )
    assert redact_url("unix://:pw@/run/r.sock") == "unix://:***@/run/r.sock"
    assert redact_url("redis://u:p@h:bad/0") == "redis://u:***@h:bad/0"


@pytest.mark.parametrize("form", ["tls", "unix", "user"])
def test_every_url_form_reaches_the_store(secured_redis: SecuredRedis, form: str) -> None:
    url = {
        "tls": secured_redis.tls_url,
        "unix": secured_redis.unix_url,
        "user": secured_redis.user_url(),
    }[form]
    client = connect(url)
    try:
        record = submit(TaskStore(client), make_snapshot(), TaskOptions(queue="gpu"))
        assert TaskStore(client).get(record.id) == record
        assert client.acl_whoami() == (USER if form == "user" else "default")
    finally:
        client.flushdb()
        client.close()


def test_a_wrong_password_is_one_line_without_it(secured_redis: SecuredRedis) -> None:
    with pytest.raises(ConnectionFailed) as info:
        connect(secured_redis.user_url("wrong-password-7"))
    message = str(info.value)
    assert "refused the credentials" in message and "check the user and password" in message
    assert "wrong-password-7" not in message and f"rediss://{USER}:***@127.0.0.1" in message
    assert "\n" not in message


def test_tls_with_an_unknown_ca_is_one_line(secured_redis: SecuredRedis) -> None:
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{secured_redis.tls_port}/0"
    with pytest.raises(ConnectionFailed) as info:
        connect(url, timeout=2.0)
    message = str(info.value)
    assert message.startswith(f"cannot reach Redis at rediss://{USER}:***@127.0.0.1")
    assert "certificate verify failed" in message.lower()
    assert PASSWORD not in message and "\n" not in message


@pytest.mark.slow
def test_persistence_warning_says_what_a_restart_would_lose(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), workdir=tmp_path)  # started with save "" and no AOF
    server.start()
    try:
        client = connect(server.url)
        nothing = persistence_warning(client)
        assert nothing is not None and nothing.startswith("this Redis keeps nothing on disk")
        assert "appendonly yes" in nothing and "\n" not in nothing
        client.config_set("save", "3600 1")
        snapshots = persistence_warning(client)
        assert snapshots is not None and "only snapshots to disk (save 3600 1)" in snapshots
        # a managed Redis that refuses CONFIG: nothing to tell by, nothing said
        client.acl_setuser(
            "app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
            categories=["+@all"], commands=["-config"],
        )  # fmt: skip
        refused = connect(f"redis://app:pw@127.0.0.1:{server.port}/0")
        assert persistence_warning(refused) is None
        client.config_set("appendonly", "yes")
        assert persistence_warning(client) is None
    finally:
        server.stop()
