"""A task's container as a process: what the engine says of its end (an OOM kill)."""

from __future__ import annotations

from typing import Any

import pytest

from overnight.agent.environments.docker.process import DockerProcess
from tests.fixtures.docker import BASE_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GREEDY = "x = bytearray(400 * 1024 * 1024)"


@pytest.mark.parametrize(("script", "oom"), [(GREEDY, True), ("raise SystemExit(3)", False)])
def test_the_engines_oom_kill_is_seen(docker_engine: Any, script: str, oom: bool) -> None:
    container = docker_engine.containers.run(
        BASE_IMAGE,
        ["python3", "-c", script],
        detach=True,
        mem_limit="64m",
        memswap_limit="64m",
        labels={"overnight.test": "oom"},
    )
    try:
        process = DockerProcess(container)
        code = process.wait(60)
        assert code == (137 if oom else 3)
        assert process.oom_killed() is oom
    finally:
        container.remove(force=True)
    assert process.oom_killed() is False  # gone: the engine cannot say, and nothing raises
