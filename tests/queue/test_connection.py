from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from overnight.errors import ConnectionFailed
from overnight.queue.connection import connect, redact_url
from tests.fixtures.services import free_port


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


def test_unix_socket(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        client = connect(f"unix://{sock}?db=0")
        assert client.ping()
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
