"""The extension point is sealed: a third kind of environment needs nothing outside
``overnight/agent/environments/``, and nothing outside it names venv's or docker's modules."""

from __future__ import annotations

import ast
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from overnight.agent.environments.base import Environment, Prepared, RunRequest
from overnight.agent.progress import ProgressLine, StopCheck
from overnight.agent.run.process import LocalProcess
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.spec import TaskSpec
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    log_text,
    make_daemon,
    wait_for,
    wait_status,
)
from tests.fixtures.cli import REPO_ROOT
from tests.fixtures.gitrepo import Repo

IMPLEMENTATIONS = ("overnight.agent.environments.docker", "overnight.agent.environments.venv")
MAY_NAME_ONE = {
    "overnight/commands/daemon.py": "the factory: picks an environment by name",
    "overnight/commands/build.py": "`agent build` makes a Docker image: docker by definition",
}


class TrackedProcess(LocalProcess):
    """A local process that notes when the agent discards it."""

    discarded = 0

    def discard(self) -> None:
        TrackedProcess.discarded += 1


class LocalEnvironment(Environment):
    """Runs the command as it is, in the agent's own environment: no build, no cache."""

    name = "local"

    def __init__(self) -> None:
        self.images: list[str | None] = []

    def key(self, spec: TaskSpec, *, image: str | None = None) -> str:
        return "local"

    def prepare(
        self, spec: TaskSpec, log: ProgressLine, should_stop: StopCheck, *, image: str | None = None
    ) -> Prepared:
        self.images.append(image)
        return Prepared(key="local", built=False, python=platform.python_version())

    def start(self, prepared: Prepared, request: RunRequest) -> TrackedProcess:
        env = {**os.environ, **request.env}
        return TrackedProcess(request.argv, cwd=request.workspace / request.workdir, env=env)


def test_a_third_environment_runs_a_task_through_the_real_agent(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    config = agent_config(redis_url, tmp_path / "agent", venv_cache, monitor_interval=0.1)
    environment = LocalEnvironment()
    gate = tmp_path / "gate"
    record = enqueue(agent_store, project, "--wait-for", str(gate), image="example/image:1")
    TrackedProcess.discarded = 0
    agent = Background(make_daemon(config, environment=environment), burst=True)
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        pid = int(wait_for(lambda: _printed(agent_store, record.id, "pid="), what="its pid"))
        # its process tree is the agent's own (GPU use) and is sampled (CPU, memory)
        wait_for(lambda: pid in agent.daemon.own_pids(), what="the task among the agent's pids")
        wait_for(lambda: "rss_mb" in _usage(agent, record.id), what="a sample of its memory")
        gate.touch()
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
    finally:
        gate.touch()
        agent.stop()
    assert done.status is TaskStatus.FINISHED, done.error
    assert done.extra["environment"]["mode"] == "local"
    assert environment.images == ["example/image:1"]  # the image reaches the environment
    assert "this agent runs venvs" not in log_text(agent_store, record.id)
    assert TrackedProcess.discarded == 1  # once its output and exit code were saved
    assert "rss_mb" in done.extra["resources"]["summary"]


def _usage(agent: Background, task_id: str) -> dict[str, float]:
    usage: dict[str, dict[str, float]] = agent.daemon.info().extra["usage"]
    return usage.get(task_id, {})


def _printed(store: TaskStore, task_id: str, prefix: str) -> str | None:
    lines = log_text(store, task_id).splitlines()
    return next((line.removeprefix(prefix) for line in lines if line.startswith(prefix)), None)


def test_only_the_factory_names_an_implementation() -> None:
    package = REPO_ROOT / "overnight"
    sealed = package / "agent" / "environments"
    offenders: list[str] = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(REPO_ROOT).as_posix()
        if sealed in path.parents or where in MAY_NAME_ONE:
            continue
        offenders.extend(f"{where}: {name}" for name in _implementations(path))
    assert offenders == [], "code outside environments/ asks which environment it has"


def _implementations(path: Path) -> Sequence[str]:
    """The venv or docker modules ``path`` imports, deferred imports included."""
    named: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        named.extend(m for m in modules if m.startswith(IMPLEMENTATIONS))
    return named
