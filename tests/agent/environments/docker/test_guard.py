"""A container's guard against a real engine: it kills the container once its agent is gone and
the adoption window is over, unless an adopting agent ended it first."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from overnight.agent.environments.docker.guard import (
    adoption_window,
    end_guards,
    start_container_guard,
)
from tests.fixtures.docker import BASE_IMAGE, DockerSandbox

pytestmark = pytest.mark.docker


def _sleeper(sandbox: DockerSandbox) -> Any:
    return sandbox.client.containers.run(
        BASE_IMAGE,
        ["sleep", "120"],
        entrypoint="",
        detach=True,
        labels={"overnight.agent": sandbox.agent_name},  # removed at the sandbox's cleanup
    )


def _status(container: Any, timeout: float = 0.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        if container.status != "running" or time.monotonic() >= deadline:
            return str(container.status)
        time.sleep(0.1)


def test_a_guard_whose_agent_is_gone_kills_the_container(docker_sandbox: DockerSandbox) -> None:
    doomed = _sleeper(docker_sandbox)
    guard = start_container_guard(doomed.id, 0.5, dict(os.environ))
    assert guard is not None
    guard.fire()  # as the agent's death closes the pipe
    assert _status(doomed, timeout=30) == "exited"


def test_a_released_or_ended_guard_leaves_the_container_running(
    docker_sandbox: DockerSandbox,
) -> None:
    finished, adopted = _sleeper(docker_sandbox), _sleeper(docker_sandbox)
    released = start_container_guard(finished.id, 0.0, dict(os.environ))
    ended = start_container_guard(adopted.id, 1.0, dict(os.environ))
    assert released is not None and ended is not None
    released.release()
    assert end_guards(adopted.id) == 1  # an agent adopting the container after a restart
    ended.fire()
    time.sleep(2.0)
    assert (_status(finished), _status(adopted)) == ("running", "running")


def test_the_window_ends_before_a_heartbeat_can_expire() -> None:
    assert adoption_window(30.0, 5.0) == 19.0
    assert adoption_window(2.0, 1.0) == 0.0
