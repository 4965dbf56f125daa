"""A container's guard: it kills the task's container when its agent dies and no restart of
that agent adopts it in time.

A container outlives its agent on purpose: an agent restarted under the same name adopts it
(:meth:`DockerEnvironment.adopt`) and the run goes on. But an agent that does not come back
leaves it running while its task is declared lost and retried elsewhere, the same run twice at
once. So the guard (:mod:`overnight.agent.run.guard`'s pipe: end of file without a release
means the agent died) waits ``window`` seconds, short of the moment the task's heartbeat can
expire and the task be declared lost, and then kills the container. An adopting agent ends the
old guard first (:func:`end_guards`) and starts its own.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping

import psutil

from overnight.agent.run.guard import WAIT_FOR_AGENT, Guard

MARKER = "overnight-container-guard"

SOURCE = (
    WAIT_FOR_AGENT
    + """\
import time
if not released:
    time.sleep(float(sys.argv[3]))  # a restarted agent of the same name adopts it meanwhile
    import docker
    try:
        docker.from_env(timeout=60).containers.get(sys.argv[2]).kill()
    except Exception:
        pass
"""
)

_CLIENT_ENV = ("PATH", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
"""Besides ``DOCKER_*``: what the guard's interpreter needs to import docker and reach the engine
as the agent does."""


def adoption_window(lost_ttl: float, heartbeat_interval: float) -> float:
    """Seconds a guard waits for an adoption: a task's last heartbeat may be a heartbeat
    interval old when its agent dies, and the kill takes a moment."""
    return max(0.0, lost_ttl - 2 * heartbeat_interval - 1.0)


def start_container_guard(
    container_id: str, window: float, environ: Mapping[str, str]
) -> Guard | None:
    """A guard over the container, or None where it cannot start; ``environ`` is the agent's."""
    env = {k: v for k, v in environ.items() if k in _CLIENT_ENV or k.startswith("DOCKER_")}
    argv = [sys.executable, "-c", SOURCE, MARKER, container_id, f"{window:g}"]
    try:
        return Guard(argv=argv, env=env)
    except OSError:
        return None


def end_guards(container_id: str) -> int:
    """End the guards an earlier run of the agent left over the container (it is adopted);
    returns how many."""
    ended = 0
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            if MARKER in cmdline and container_id in cmdline:
                proc.terminate()
                ended += 1
    return ended
