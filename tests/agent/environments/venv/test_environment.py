from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from overnight.agent.environments.base import Prepared, RunRequest
from overnight.agent.environments.venv.environment import VenvEnvironment
from overnight.agent.run.logbatch import Line
from overnight.agent.run.supervisor import RunOutcome, supervise
from overnight.agent.run.taskenv import TaskEnv
from overnight.errors import (
    EnvironmentBuildError,
    InstallError,
    PreparationCanceled,
    TaskRunError,
)
from overnight.spec import RepoState, Requirements, TaskSpec
from tests.fixtures.wheels import broken_sdist, make_wheel

OWN = "{}.{}.{}".format(*sys.version_info[:3])


def spec_for(
    requirements: str = "", python: str = OWN, argv: Sequence[str] = ("python",)
) -> TaskSpec:
    return TaskSpec(
        repo=RepoState(commit="0" * 40),
        argv=tuple(argv),
        python=python,
        requirements=Requirements(source="file" if requirements else "none", text=requirements),
    )


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: dict[str, threading.Event] = {}

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        for word, event in self.seen.items():
            if word in line:
                event.set()

    def when(self, word: str) -> threading.Event:
        return self.seen.setdefault(word, threading.Event())


def never() -> bool:
    return False


def run(
    env: VenvEnvironment, prepared: Prepared, argv: Sequence[str], workspace: Path, **kw: str
) -> tuple[RunOutcome, list[str]]:
    lines: list[str] = []

    def sink(batch: Sequence[Line]) -> None:
        lines.extend(text for _, text in batch)

    request = RunRequest(
        task_id="t1", argv=tuple(argv), workspace=workspace, workdir=kw.pop("workdir", "."), env=kw
    )
    outcome = supervise(env.start(prepared, request), sink, should_stop=never, timeout=60, grace=1)
    return outcome, lines


@pytest.fixture
def venvs(tmp_path: Path) -> VenvEnvironment:
    return VenvEnvironment(tmp_path / "cache")


def test_an_empty_venv_is_built_once_then_reused(venvs: VenvEnvironment, tmp_path: Path) -> None:
    log = Log()
    first = venvs.prepare(spec_for(), log, never)
    assert first.built and first.python == OWN and first.key == venvs.key(spec_for())
    assert Path(first.details["venv_python"]).exists()
    assert first.details["installed"] == [] and first.details["record"]["packages"] == []
    assert any("building venv" in line for line in log.lines)
    second = venvs.prepare(spec_for(), Log(), never)
    assert (second.built, second.key, second.details["venv"]) == (
        False,
        first.key,
        first.details["venv"],
    )
    # a new agent process on the same cache reuses it too
    third = VenvEnvironment(tmp_path / "cache").prepare(spec_for(), Log(), never)
    assert not third.built


def test_the_second_task_with_the_same_requirements_installs_nothing(
    venvs: VenvEnvironment, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "wheels", "demo-tool", "1.2", script="demo-tool")
    first = venvs.prepare(spec_for(f"{wheel}\n"), Log(), never)
    installed = [f"demo-tool @ {wheel.as_uri()}"]
    assert first.built and first.details["installed"] == installed
    log = Log()
    again = venvs.prepare(spec_for(f"# the same, reordered\n\n{wheel}   \n"), log, never)
    assert (again.built, again.key, again.details["installed"]) == (False, first.key, [])
    assert again.details["record"]["packages"] == installed
    assert not any("install" in line.lower() for line in log.lines)


def test_the_task_runs_in_the_venv_in_its_workdir_with_its_env(
    venvs: VenvEnvironment, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path / "wheels", "demo-tool", "1.2", script="demo-tool")
    prepared = venvs.prepare(spec_for(f"{wheel}\n"), Log(), never)
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    # The console script was installed before the venv moved into the cache: it must still run.
    outcome, lines = run(venvs, prepared, ["demo-tool"], workspace)
    assert (outcome.exit_code, lines) == (0, ["demo-tool 1.2"])
    script = "import os, sys; print(sys.prefix); print(os.getcwd()); print(os.environ['MY_VAR'])"
    outcome, lines = run(
        venvs, prepared, ["python", "-c", script], workspace, workdir="sub", MY_VAR="x"
    )
    assert outcome.exit_code == 0
    assert lines == [prepared.details["venv"], str(workspace / "sub"), "x"]


def test_a_package_from_the_index_installs(venvs: VenvEnvironment, tmp_path: Path) -> None:
    prepared = venvs.prepare(spec_for("six==1.16.0\n"), Log(), never)
    assert prepared.details["installed"] == ["six==1.16.0"]
    outcome, lines = run(
        venvs, prepared, ["python", "-c", "import six; print(six.__version__)"], tmp_path
    )
    assert (outcome.exit_code, lines) == (0, ["1.16.0"])


def test_concurrent_builds_of_one_key_do_one_build(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "shared", "1.0")
    spec = spec_for(f"{wheel}\n")
    results: list[Prepared] = []
    errors: list[BaseException] = []
    logs = [Log() for _ in range(3)]
    waiting = [log.when("another task is building") for log in logs]

    def agent(log: Log) -> None:  # each thread is its own environment object, like two agents
        try:
            results.append(VenvEnvironment(tmp_path / "cache").prepare(spec, log, never))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(log,)) for log in logs]
    # Hold the key's build lock until all three wait on it, so they really race for it.
    holder = VenvEnvironment(tmp_path / "cache")
    with holder.cache.build_lock(holder.key(spec)):
        for thread in threads:
            thread.start()
        assert all(event.wait(60) for event in waiting)
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.built for p in results) == [False, False, True]
    assert len({p.details["record"]["created"] for p in results}) == 1
    assert len(list((tmp_path / "cache" / "envs").iterdir())) == 1


AGENT = """
import sys
from pathlib import Path
from overnight.agent.environments.venv.environment import VenvEnvironment
from overnight.spec import RepoState, Requirements, TaskSpec
spec = TaskSpec(RepoState("0" * 40), ("python",), sys.argv[2], Requirements("file", sys.argv[3]))
print(VenvEnvironment(Path(sys.argv[1])).prepare(spec, lambda line: None, lambda: False).built)
"""


def test_two_agent_processes_building_one_key_do_one_build(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "shared", "1.0")
    argv = [sys.executable, "-c", AGENT, str(tmp_path / "cache"), OWN, f"{wheel}\n"]
    agents = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(agent.communicate(timeout=100)[0].strip() for agent in agents)
    assert outputs == ["False", "True"]


def keys_in(cache: Path) -> set[str]:
    return {p.name for p in (cache / "envs").iterdir()}


def test_least_recently_used_venvs_are_evicted_but_never_one_in_use(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    venvs = VenvEnvironment(cache, max_envs=2)
    wheels = {n: make_wheel(tmp_path / "wheels", n) for n in ("alpha", "beta", "gamma")}
    specs = {n: spec_for(f"{w}\n") for n, w in wheels.items()}
    keys = {n: venvs.key(s) for n, s in specs.items()}

    a = venvs.prepare(specs["alpha"], Log(), never)
    b = venvs.prepare(specs["beta"], Log(), never)
    c = venvs.prepare(specs["gamma"], Log(), never)
    assert keys_in(cache) == set(keys.values())  # alpha and beta are held by their tasks
    del a, b, c
    gc.collect()
    venvs.prepare(specs["beta"], Log(), never)  # beta is now the most recent but for this one
    assert keys_in(cache) == {keys["beta"], keys["gamma"]}


def test_a_running_task_keeps_its_venv(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    venvs = VenvEnvironment(cache, max_envs=1)
    running = venvs.prepare(spec_for(), Log(), never)
    request = RunRequest("t1", ("python", "-c", "import sys; sys.stdin.read()"), tmp_path, ".", {})
    process = venvs.start(running, request)
    key = running.key
    del running
    gc.collect()
    other = venvs.prepare(spec_for(f"{make_wheel(tmp_path / 'w', 'other')}\n"), Log(), never)
    assert key in keys_in(cache)
    process.kill()
    assert b"".join(process.output()) == b""
    assert process.wait(30) is not None
    del process
    gc.collect()
    assert venvs.evict(keep={other.key}) == [key]
    assert keys_in(cache) == {other.key}


def test_a_size_limit_evicts_too(tmp_path: Path) -> None:
    venvs = VenvEnvironment(tmp_path / "cache", max_gb=1e-9)
    first = venvs.prepare(spec_for(), Log(), never)
    key = first.key
    del first
    gc.collect()
    second = venvs.prepare(spec_for(f"{make_wheel(tmp_path / 'w', 'other')}\n"), Log(), never)
    assert keys_in(tmp_path / "cache") == {second.key} and key != second.key


def slow_uv(tmp_path: Path, real: str) -> str:
    """A uv that hangs in `uv pip install` (after saying so) and is real otherwise."""
    fake = tmp_path / "slow-uv"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = pip ] && [ "$2" = install ]; then echo "slow install starting"; exec sleep 300; fi\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    return str(fake)


def test_cancel_during_the_build_stops_uv_and_leaves_nothing(
    venvs: VenvEnvironment, tmp_path: Path
) -> None:
    slow = VenvEnvironment(tmp_path / "cache", uv_bin=slow_uv(tmp_path, venvs.uv_bin))
    spec = spec_for(f"{make_wheel(tmp_path / 'w', 'demo')}\n")
    log = Log()
    started = log.when("slow install starting")
    with pytest.raises(PreparationCanceled, match="installing the requirements"):
        slow.prepare(spec, log, started.is_set)
    assert list((tmp_path / "cache" / "envs").iterdir()) == []
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert venvs.prepare(spec, Log(), never).built  # the build lock was released


def test_cancel_while_waiting_for_another_build(venvs: VenvEnvironment) -> None:
    spec = spec_for()
    log = Log()
    waiting = log.when("another task is building")
    with venvs.cache.build_lock(venvs.key(spec)), pytest.raises(PreparationCanceled):
        venvs.prepare(spec, log, waiting.is_set)


def test_an_install_failure_names_the_installers_error(
    venvs: VenvEnvironment, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "gone-1.0-py3-none-any.whl"
    log = Log()
    with pytest.raises(
        EnvironmentBuildError, match=r"installing the requirements failed .*not found"
    ):
        venvs.prepare(spec_for(f"{missing}\n"), log, never)
    assert any("error:" in line for line in log.lines)  # uv's own lines are in the log
    assert list((tmp_path / "cache" / "envs").iterdir()) == []


def test_a_failed_build_is_an_install_error_naming_the_package_and_its_error(
    venvs: VenvEnvironment, tmp_path: Path
) -> None:
    sdist = tmp_path / "bad-1.0.tar.gz"
    sdist.write_bytes(broken_sdist("bad", fails="import torch_absent_here"))
    with pytest.raises(InstallError) as info:
        venvs.prepare(spec_for(f"{sdist}\n"), Log(), never)
    assert str(info.value) == (
        f"installing the requirements failed (uv exited with 1): Failed to build `bad @ "
        f"file://{sdist}`: ModuleNotFoundError: No module named 'torch_absent_here'; fix the "
        "requirements and enqueue again (a retry reuses these)"
    )


def test_command_not_found(venvs: VenvEnvironment, tmp_path: Path) -> None:
    prepared = venvs.prepare(spec_for(), Log(), never)
    request = RunRequest("t1", ("no-such-command-xyz", "--lr", "1"), tmp_path, ".", {})
    with pytest.raises(TaskRunError, match="command not found: no-such-command-xyz"):
        venvs.start(prepared, request)


def test_a_python_the_agent_lacks_is_said_in_the_log_and_warnings(venvs: VenvEnvironment) -> None:
    log = Log()
    prepared = venvs.prepare(spec_for(python="3.96.1"), log, never)
    assert prepared.python == OWN
    assert len(prepared.warnings) == 1 and "3.96 not found" in prepared.warnings[0]
    assert any("3.96 not found" in line for line in log.lines)


def test_the_key_changes_with_what_defines_the_venv(venvs: VenvEnvironment) -> None:
    base = venvs.key(spec_for("six==1.16.0\n"))
    assert venvs.key(spec_for("six==1.17.0\n")) != base
    assert (
        venvs.key(spec_for("six==1.16.0\n", python="3.96.0")) == base
    )  # same fallback interpreter
    assert venvs.key(spec_for("six==1.16.0  # pinned\n")) == base


def test_builds_and_tasks_see_the_allowlist_not_the_agents_secrets(tmp_path: Path) -> None:
    """uv runs sdists' setup.py: it gets the installers' variables but no secret; the task gets
    neither (an index login in ``UV_INDEX_URL`` is the build's alone)."""
    dump = tmp_path / "uv-env"
    real = VenvEnvironment(tmp_path / "cache").uv_bin
    recording = tmp_path / "recording-uv"
    recording.write_text(f'#!/bin/sh\nenv >> {dump}\nexec {real} "$@"\n')
    recording.chmod(0o755)
    host = {
        **os.environ,
        "OVERNIGHT_REDIS_URL": "redis://:hunter2@redis.lab:6379/0",
        "AWS_SECRET_ACCESS_KEY": "aws-canary",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LANG": "C.UTF-8",
    }
    venvs = VenvEnvironment(
        tmp_path / "cache", uv_bin=str(recording), env=TaskEnv(host, {"FROM_CONFIG": "yes"})
    )
    prepared = venvs.prepare(spec_for(f"{make_wheel(tmp_path / 'w', 'demo')}\n"), Log(), never)
    built = dump.read_text()
    assert "PIP_DISABLE_PIP_VERSION_CHECK=1" in built and "FROM_CONFIG=yes" in built
    assert "hunter2" not in built and "aws-canary" not in built
    script = "import os; [print(f'{k}={v}') for k, v in os.environ.items()]"
    outcome, lines = run(venvs, prepared, ["python", "-c", script], tmp_path, OWN_VAR="mine")
    assert outcome.exit_code == 0
    assert {"LANG=C.UTF-8", "FROM_CONFIG=yes", "OWN_VAR=mine"} <= set(lines)
    seen = "\n".join(lines)
    assert "hunter2" not in seen and "aws-canary" not in seen and "PIP_" not in seen
