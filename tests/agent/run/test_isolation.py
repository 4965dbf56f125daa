"""What a task reaches on the host: the agent's folders are private, a task user is confined."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import (
    agent_config,
    enqueue,
    log_text,
    process_gone,
    start_agent,
    wait_status,
)
from tests.fixtures.cli import run_cli
from tests.fixtures.gitrepo import Repo


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_the_agents_folders_are_private_from_its_start(redis_url: str, tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("ws", "envs", "spill")}
    for folder in folders.values():
        (folder / "mirrors").mkdir(parents=True)  # made earlier, under a umask of 022
        folder.chmod(0o755)
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none",
        OVERNIGHT_REDIS_URL=redis_url, OVERNIGHT_WORKSPACE_DIR=str(folders["ws"]),
        OVERNIGHT_CACHE_DIR=str(folders["envs"]), OVERNIGHT_SPILL_DIR=str(folders["spill"]),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {name: _mode(folder) for name, folder in folders.items()} == dict.fromkeys(
        folders, 0o700
    )


PROBE = """\
import os, subprocess, sys, time
from pathlib import Path
shared, me = Path(sys.argv[1]), os.environ["OVERNIGHT_TASK_ID"]
print(f"uid={os.getuid()} home={os.environ['HOME']}", flush=True)
(shared / f"ready-{me}").write_text(os.getcwd())
while len(list(shared.glob("ready-*"))) < 2:
    time.sleep(0.05)
peer = next(p.read_text() for p in shared.glob("ready-*") if p.name != f"ready-{me}")
targets = {
    "config": Path(sys.argv[2]),
    "canary": Path(sys.argv[3]),
    "environ": Path(f"/proc/{os.environ['OVERNIGHT_AGENT_PID']}/environ"),
    "peer": Path(peer) / "probe.py",
    "mirrors": Path(sys.argv[3]).parent / "mirrors",
    "trees": Path(sys.argv[3]).parent / "trees",
}
for label, target in targets.items():
    try:
        os.listdir(target) if target.is_dir() else target.read_bytes()
        print(f"{label}: READ", flush=True)
    except PermissionError:
        print(f"{label}: denied", flush=True)
Path("own-output.txt").write_text("mine")
print("own tree:", Path("probe.py").exists() and Path("own-output.txt").read_text(), flush=True)
print(f"output mode: {Path('own-output.txt').stat().st_mode & 0o777:o}", flush=True)
spy = subprocess.Popen(["sleep", "300"], start_new_session=True)  # outlives the task's group
(shared / f"spy-{me}").write_text(str(spy.pid))
(shared / f"done-{me}").touch()
while len(list(shared.glob("done-*"))) < 2:
    time.sleep(0.05)
"""


BACKEND = """\
import os, subprocess, zipfile
from pathlib import Path

SHARED = Path({shared!r})
PLANT = Path({plant!r})


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    (SHARED / "build-uid").write_text(str(os.getuid()))
    try:
        PLANT.write_text("planted by a build")
        (SHARED / "plant").write_text("written")
    except OSError:
        (SHARED / "plant").write_text("denied")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # uv waits for its pipes
    spy = subprocess.Popen(["sleep", "300"], start_new_session=True, **quiet)
    (SHARED / "build-spy").write_text(str(spy.pid))
    name = "spy-1.0-py3-none-any.whl"
    dist = "spy-1.0.dist-info"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        wheel.writestr("spy/__init__.py", "")
        wheel.writestr(f"{{dist}}/METADATA", "Metadata-Version: 2.1\\nName: spy\\nVersion: 1.0\\n")
        wheel.writestr(f"{{dist}}/WHEEL", "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
        wheel.writestr(f"{{dist}}/RECORD", "")
    return name
"""
PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "spy"
version = "1.0"
"""


def spy_package(folder: Path, shared: Path, plant: Path) -> Path:
    """A source package whose build (an in-tree backend: no index needed) says who ran it,
    tries to plant a file in the agent's folders and leaves a process behind."""
    folder.mkdir(mode=0o755)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "backend.py").write_text(BACKEND.format(shared=str(shared), plant=str(plant)))
    return folder


@pytest.fixture
def reachable(tmp_path: Path) -> Iterator[Path]:
    """A folder every user may enter (pytest's own base folder is its user's alone)."""
    base = Path(tempfile.mkdtemp(prefix="overnight-isolation-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="switching a task to another uid needs root")
def test_venv_tasks_run_as_their_own_uid_and_reach_nothing_of_the_agent(
    reachable: Path, redis_url: str, project: Repo, agent_store: TaskStore, tmp_path: Path
) -> None:
    shared = reachable / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    plant = reachable / "envs" / "uv-cache" / "planted"
    project.write("probe.py", PROBE)
    project.write("requirements.txt", f"{spy_package(reachable / 'spy', shared, plant)}\n")
    project.commit("probe")
    project.push()
    config_file = reachable / "agent.yaml"
    config_file.write_text("agent:\n  grace: 3\n")
    config_file.chmod(0o600)
    config = agent_config(
        redis_url, reachable, reachable / "envs", task_user="60000-60001", cpu_slots=2
    )
    config.workspace_path.mkdir()
    canary = config.workspace_path / "canary.txt"
    canary.write_text("the agent's")
    canary.chmod(0o644)
    argv = ["python", "probe.py", str(shared), str(config_file), str(canary)]
    snapshot = take_snapshot(project.path, argv, SnapshotOptions())
    records = [enqueue(agent_store, project, snapshot=snapshot) for _ in range(2)]
    umask = os.umask(0o022)
    os.umask(umask)
    agent = start_agent(config, tmp_path, "--burst", OVERNIGHT_CONFIG=str(config_file))
    assert agent.wait() == 0, agent.output()
    uids = set()
    for record in records:
        assert wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        lines = log_text(agent_store, record.id).splitlines()
        assert agent_store.get(record.id).status is TaskStatus.FINISHED, "\n".join(lines)
        uids |= {line.split()[0] for line in lines if line.startswith("uid=")}
        for label in ("config", "canary", "environ", "peer", "mirrors", "trees"):
            assert f"{label}: denied" in lines
        assert "own tree: mine" in lines
        assert f"output mode: {0o666 & ~umask:o}" in lines  # the umask the agent was given
    assert uids == {"uid=60000", "uid=60001"}
    for spy in shared.glob("spy-*"):  # the next task given that uid must not meet them
        assert process_gone(int(spy.read_text()))
    assert canary.read_text() == "the agent's"
    assert (shared / "build-uid").read_text() in ("60000", "60001")  # the sdist's code, too
    assert (shared / "plant").read_text() == "denied" and not plant.exists()
    assert process_gone(int((shared / "build-spy").read_text()))
    made = [path for path in config.workspace_path.glob("trees/*") if path.is_dir()]
    assert made and all(_mode(path) == 0o700 for path in made)  # made while it ran: its own
    for path in (reachable / "envs" / "envs").rglob("*"):  # the venv: the agent's, read-only
        info = path.lstat()
        assert info.st_uid == 0, path
        assert path.is_symlink() or not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
