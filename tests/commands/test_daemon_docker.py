"""``overnight agent daemon --env-mode docker`` as a user runs it: enqueued tasks in containers.

Everything here goes through the real commands (``overnight enqueue``, ``overnight agent
daemon``, ``overnight cancel``) against a real Redis and a real Docker engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
from functools import partial
from pathlib import Path

import pytest
import redis

from overnight.agent.config import AgentConfig
from overnight.errors import ExitCode
from overnight.outputs import manifest
from overnight.queue.records import Phase, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from overnight.spec import Snapshot
from tests.fixtures.agents import (
    LOCAL_REPOS,
    agent_config,
    enqueue,
    log_text,
    make_project,
    snapshot_of,
    start_agent,
    wait_for,
    wait_status,
)
from tests.fixtures.cli import run_cli
from tests.fixtures.docker import BASE_IMAGE, CA_BUNDLE, DockerSandbox
from tests.fixtures.fakenvml import FakeDriver, FakeGPU
from tests.fixtures.gitrepo import Repo, make_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CHECK = """\
import hashlib, os
import iniconfig
print("untracked:", open("notes.txt").read().strip())
print("weights:", hashlib.sha256(open("../weights.bin", "rb").read()).hexdigest())
print("venv:", iniconfig.__file__.startswith(os.environ["VIRTUAL_ENV"]))
print("dataset:", open("/data/dataset.txt").read().strip())
shm = os.statvfs("/dev/shm")
print("shm:", shm.f_blocks * shm.f_frsize)
print("net:", ",".join(sorted(os.listdir("/sys/class/net"))))
print("greeting:", os.environ.get("GREETING"))
print("ca:", os.environ.get("SSL_CERT_FILE"))
print("cwd:", os.getcwd(), os.getuid())
open("out.txt", "w").write("written by the task\\n")
"""

STUBBORN = """\
import signal, time
signal.signal(signal.SIGTERM, lambda *_: print("got TERM, carrying on", flush=True))
print("stubborn: ready", flush=True)
while True:
    time.sleep(0.05)
"""

BINARY = bytes(range(256)) * 4 + b"\x00\x00changed\xff"
UID, GID = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())  # tasks' user


@pytest.fixture
def store(redis_url: str) -> TaskStore:
    return TaskStore(redis.Redis.from_url(redis_url))


def agent_env(sandbox: DockerSandbox, tmp_path: Path, redis_url: str) -> dict[str, str]:
    """The variables of a test agent: its sandbox's image repository and directories."""
    return {
        "OVERNIGHT_REDIS_URL": redis_url,
        "OVERNIGHT_DOCKER_IMAGE_REPO": sandbox.repo,
        "OVERNIGHT_WORKSPACE_DIR": str(tmp_path / "agent" / "ws"),
        "OVERNIGHT_CACHE_DIR": str(tmp_path / "agent" / "envs"),
        "OVERNIGHT_SPILL_DIR": str(tmp_path / "agent" / "spill"),
        **LOCAL_REPOS,
    }


def docker_agent(
    sandbox: DockerSandbox, redis_url: str, tmp_path: Path, **fields: object
) -> AgentConfig:
    """The settings of a docker agent in ``tmp_path`` on the sandbox's names."""
    agent = tmp_path / "agent"
    return agent_config(redis_url, agent, agent / "envs", **sandbox.agent_settings(**fields))


def run_burst_agent(config: AgentConfig, tmp_path: Path) -> None:
    """An agent subprocess that serves its queues until they are empty."""
    agent = start_agent(config, tmp_path, "--burst")
    try:
        assert agent.wait(100) == 0, agent.output()
    finally:
        agent.kill()


def own_containers(sandbox: DockerSandbox) -> list[object]:
    label = f"overnight.agent={sandbox.agent_name}"
    return list(sandbox.client.containers.list(all=True, filters={"label": label}))


def experiment(tmp_path: Path) -> Repo:
    """A repo whose ``exp/check.py`` needs iniconfig; uncommitted: a binary change, a new file."""
    repo = make_repo(tmp_path, name="experiment")
    repo.write("requirements.txt", "iniconfig==2.0.0\n")
    repo.write("weights.bin", bytes(range(256)))
    repo.write("exp/check.py", CHECK)
    repo.commit("experiment")
    repo.push()
    repo.write("weights.bin", BINARY)
    repo.write("exp/notes.txt", "not committed anywhere\n")
    return repo


def test_enqueued_tasks_run_in_containers_and_the_second_installs_nothing(
    docker_sandbox: DockerSandbox, redis_url: str, store: TaskStore, tmp_path: Path
) -> None:
    repo = experiment(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.txt").write_text("the dataset\n")
    ids = []
    for name in ("first", "second"):
        proc = run_cli(
            "enqueue", "-q", "q", "--gpus", "0", "--name", name, "--json", "--", "python3", "check.py",
            cwd=repo.path / "exp", OVERNIGHT_REDIS_URL=redis_url,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)[0]["id"])

    agent = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "docker", "--gpus", "none",
        "--name", docker_sandbox.agent_name, "--default-image", BASE_IMAGE,
        "--docker-mount", f"{data}:/data:ro", "--docker-shm-size", "96m",
        "--docker-network", "none", "--keep-workspaces",
        env=agent_env(docker_sandbox, tmp_path, redis_url), OVERNIGHT_ENV="GREETING=hello",
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr

    first, second = (store.get(task_id) for task_id in ids)
    for record in (first, second):
        assert record.status is TaskStatus.FINISHED, (record.error, log_text(store, record.id))
        assert record.exit_code == 0
        output = task_output(store, record)
        assert output == {
            "untracked": "not committed anywhere",
            "weights": hashlib.sha256(BINARY).hexdigest(),
            "venv": "True",
            "dataset": "the dataset",
            "shm": str(96 * 1024 * 1024),
            "net": "lo",  # --docker-network none; the install still reached the index
            "greeting": "hello",
            "ca": "/etc/overnight/ca-bundle.crt" if CA_BUNDLE.is_file() else "None",
            "cwd": f"/workspace/exp {UID}",
        }
        written = tmp_path / "agent" / "ws" / "tasks" / record.id / "exp" / "out.txt"
        assert written.read_text() == "written by the task\n"
        assert (written.stat().st_uid, written.stat().st_gid) == (UID, GID)

    built, reused = first.extra["environment"], second.extra["environment"]
    assert (built["mode"], built["built"], reused["built"]) == ("docker", True, False)
    assert built["key"] == reused["key"]
    assert "installing the requirements" in log_text(store, first.id)
    assert "installing the requirements" not in log_text(store, second.id)
    image = docker_sandbox.client.images.get(f"{docker_sandbox.repo}:{built['key']}")
    assert image.labels["overnight.key"] == built["key"]
    assert own_containers(docker_sandbox) == []


def test_a_task_cannot_leave_a_setuid_root_program_behind(
    docker_sandbox: DockerSandbox, redis_url: str, store: TaskStore, tmp_path: Path
) -> None:
    """The reproduced attack: a task copied bash into its workspace and made it setuid, and a
    local user who ran that copy got euid 0. Now the task's user is not root, so the copy can
    give no more than the task had."""
    project = make_project(tmp_path)
    recorded = snapshot_of(project)
    script = (
        "cp /bin/bash ./bash && chmod u+s ./bash; echo uid: $(id -u); "
        "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status"
    )
    spec = dataclasses.replace(recorded.spec, argv=("sh", "-c", script))
    task = enqueue(store, project, snapshot=Snapshot(spec=spec, blobs=recorded.blobs))
    config = docker_agent(docker_sandbox, redis_url, tmp_path, keep_workspaces=True)
    run_burst_agent(config, tmp_path)
    kept = config.workspace_path / "tasks" / task.id
    assert (kept / "bash").is_file()  # the copy is there, setuid or not, but never root's
    for path in kept.rglob("*"):
        info = path.lstat()
        assert not (info.st_mode & stat.S_ISUID and info.st_uid == 0), path
        assert not (info.st_mode & stat.S_ISGID and info.st_gid == 0), path
    record = store.get(task.id)
    lines = log_text(store, task.id).splitlines()
    assert record.status is TaskStatus.FINISHED, (record.error, lines)
    assert f"uid: {UID}" in lines and UID != 0
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines
    assert own_containers(docker_sandbox) == []


def task_output(store: TaskStore, record: TaskRecord) -> dict[str, str]:
    """The ``name: value`` lines the check script printed."""
    lines = log_text(store, record.id).splitlines()
    pairs = (line.split(": ", 1) for line in lines if not line.startswith("[overnight]"))
    return {p[0]: p[1] for p in pairs if len(p) == 2 and p[0] in CHECK}


def printed(store: TaskStore, task_id: str, line: str) -> bool:
    return line in log_text(store, task_id).splitlines()


def test_cancel_and_timeout_stop_the_container_after_the_grace(
    docker_sandbox: DockerSandbox, redis_url: str, store: TaskStore, tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    project.write("stubborn.py", STUBBORN)
    project.commit("a task that ignores SIGTERM")
    project.push()
    recorded = snapshot_of(project)
    spec = dataclasses.replace(recorded.spec, argv=("python3", "stubborn.py"))
    snap = Snapshot(spec=spec, blobs=recorded.blobs)
    canceled = enqueue(store, project, snapshot=snap, grace=1.0)
    timed_out = submit(store, snap, TaskOptions(queue="q", timeout=3.0, grace=1.0))
    config = docker_agent(docker_sandbox, redis_url, tmp_path, cpu_slots=2)
    agent = start_agent(config, tmp_path, "--burst")
    try:
        for task_id in (canceled.id, timed_out.id):
            wait_for(partial(printed, store, task_id, "stubborn: ready"), what="the task to run")
        proc = run_cli("cancel", canceled.id, OVERNIGHT_REDIS_URL=redis_url)
        assert proc.returncode == 0, proc.stderr
        for task_id in (canceled.id, timed_out.id):
            wait_status(store, task_id, TaskStatus.CANCELED, TaskStatus.FAILED)
        assert agent.wait() == 0, agent.output()
    finally:
        agent.kill()
    stopped, expired = store.get(canceled.id), store.get(timed_out.id)
    assert (stopped.status, stopped.phase, stopped.exit_code) == (
        TaskStatus.CANCELED,
        Phase.RUN,
        128 + signal.SIGKILL,
    )
    assert (expired.status, expired.phase, expired.exit_code) == (
        TaskStatus.FAILED,
        Phase.RUN,
        128 + signal.SIGKILL,
    )
    assert expired.error is not None and expired.error.startswith("timed out after 3")
    for record in (stopped, expired):
        assert "got TERM, carrying on" in log_text(store, record.id)  # SIGTERM first, then KILL
    assert own_containers(docker_sandbox) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--ca-bundle", "/nonexistent/ca.pem"], "ca_bundle /nonexistent/ca.pem is not a file"),
        (["--pip-conf", "/nonexistent/pip.conf"], "pip_conf /nonexistent/pip.conf is not a file"),
        (["--uv-toml", "/nonexistent/uv.toml"], "uv_toml /nonexistent/uv.toml is not a file"),
        (["--docker-user", "me"], "docker user 'me' is not UID:GID"),
        (["--docker-mount", "/data"], "mount '/data' is not HOST:CONTAINER[:ro]"),
        (["--installer-env", "PIP_INDEX_URL"], "'PIP_INDEX_URL' is not NAME=VALUE"),
    ],
)
def test_each_docker_flag_reaches_the_environment(
    docker_sandbox: DockerSandbox, redis_url: str, tmp_path: Path, args: list[str], words: str
) -> None:
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "docker", "--gpus", "none", *args,
        env=agent_env(docker_sandbox, tmp_path, redis_url),
    )  # fmt: skip
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert proc.stderr.startswith("overnight: error: ") and proc.stderr.count("\n") == 1
    assert words in proc.stderr


def test_auto_mode_is_docker_when_an_engine_answers_else_venv(
    docker_engine: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overnight.agent.environments.docker.environment import DockerEnvironment
    from overnight.agent.environments.venv.environment import VenvEnvironment
    from overnight.commands.daemon import make_environment

    config = AgentConfig(env_mode="auto", cache_dir=str(tmp_path / "envs"))
    config.cache_path.mkdir()
    docker_mode = make_environment(config, {})
    assert isinstance(docker_mode, DockerEnvironment)
    docker_mode.client.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert isinstance(make_environment(config, {}), VenvEnvironment)


def _engine_hands_out_gpus() -> bool:
    return shutil.which("nvidia-container-runtime-hook") is not None


def test_a_docker_agent_whose_engine_cannot_hand_out_gpus_does_not_start(
    docker_sandbox: DockerSandbox, redis_url: str, tmp_path: Path, fake_driver: FakeDriver
) -> None:
    # Without this, every GPU task of a sweep would fail at its container's start, one by one.
    if _engine_hands_out_gpus():
        pytest.skip("this Docker engine has the NVIDIA Container Toolkit")
    fake_driver.set([FakeGPU(), FakeGPU()])
    name = f"{docker_sandbox.agent_name}-gpu"
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "docker", "--gpus", "all",
        "--name", name, "--default-image", BASE_IMAGE,
        env={**agent_env(docker_sandbox, tmp_path, redis_url), **fake_driver.env()},
    )  # fmt: skip
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert proc.stderr.startswith("overnight: error: --env-mode docker: this Docker engine cannot")
    assert proc.stderr.count("\n") == 1
    assert "could not select device driver" in proc.stderr
    assert "install the NVIDIA Container Toolkit" in proc.stderr
    probes = {"label": ["overnight.role=probe", f"overnight.builder={name}"]}
    assert docker_sandbox.client.containers.list(all=True, filters=probes) == []


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        ([], {"OVERNIGHT_DOCKER_IMAGE_REPO": "Team Envs"},
         "docker_image_repo 'Team Envs' is not an image repository name"),
        ([], {"OVERNIGHT_DOCKER_IMAGE_REPO": "envs:latest"}, "no :tag); set docker_image_repo"),
        (["--default-image", "Python:3.11"], {},
         "default_image 'Python:3.11' is not an image reference"),
        (["--docker-shm-size", "lots"], {}, "docker_shm_size 'lots' is not a size"),
        ([], {"OVERNIGHT_DOCKER_CACHE_VOLUME": "pip/cache"},
         "docker_cache_volume 'pip/cache' is not a volume name"),
        (["--docker-network", "overnight-no-such-net"], {},
         "docker_network 'overnight-no-such-net' is not a network of this Docker engine"),
        (["--build-network", "overnight-no-such-net"], {}, "`docker network create"),
        (["--docker-mount", "/overnight-no-such-dir:/data:ro"], {},
         "docker_mounts: /overnight-no-such-dir (mounted at /data) does not exist on this host"),
    ],
)  # fmt: skip
def test_a_setting_the_engine_would_refuse_stops_the_agent_at_start(
    docker_sandbox: DockerSandbox,
    redis_url: str,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    words: str,
) -> None:
    """Not a failed task each, with a traceback: one line before the agent takes any."""
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "docker", "--gpus", "none", *args,
        env={**agent_env(docker_sandbox, tmp_path, redis_url), **env},
    )  # fmt: skip
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert proc.stderr.startswith("overnight: error: ") and proc.stderr.count("\n") == 1
    assert words in proc.stderr


def test_auto_mode_with_gpus_runs_venvs_when_the_engine_cannot_hand_them_out(
    docker_engine: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from overnight.agent.environments.venv.environment import VenvEnvironment
    from overnight.commands.daemon import make_environment

    if _engine_hands_out_gpus():
        pytest.skip("this Docker engine has the NVIDIA Container Toolkit")
    config = AgentConfig(env_mode="auto", cache_dir=str(tmp_path / "envs"))
    config.cache_path.mkdir()
    with caplog.at_level(logging.WARNING):
        chosen = make_environment(config, {}, ("0",))
    assert isinstance(chosen, VenvEnvironment)
    assert "cannot hand GPUs to containers" in caplog.text and "tasks run in venvs" in caplog.text


def test_a_docker_tasks_outputs_are_collected_from_its_mounted_tree(
    docker_sandbox: DockerSandbox, redis_url: str, store: TaskStore, tmp_path: Path
) -> None:
    """The tree is bind-mounted: the task writes under /workspace as its own uid, and the agent
    collects the same files on the host side."""
    project = make_project(tmp_path)
    recorded = snapshot_of(project)
    script = (
        'echo "dir: $OVERNIGHT_OUTPUT_DIR"; echo "0,1.5" > "$OVERNIGHT_OUTPUT_DIR/result.csv"; '
        "mkdir -p checkpoints && head -c 3000 /dev/urandom > checkpoints/model.bin; exit 2"
    )
    spec = dataclasses.replace(recorded.spec, argv=("sh", "-c", script), outputs=("checkpoints",))
    task = enqueue(store, project, snapshot=Snapshot(spec=spec, blobs=recorded.blobs))
    config = docker_agent(docker_sandbox, redis_url, tmp_path, keep_workspaces=True)
    run_burst_agent(config, tmp_path)
    record = store.get(task.id)
    assert record.status is TaskStatus.FAILED and record.exit_code == 2, record.error
    assert printed(store, task.id, "dir: /workspace/outputs")
    found = manifest.read(store.redis, task.id)
    assert [e.path for e in found.entries] == ["checkpoints/model.bin", "outputs/result.csv"]
    kept = config.workspace_path / "tasks" / task.id
    digest = hashlib.sha256((kept / "checkpoints/model.bin").read_bytes()).hexdigest()
    assert found.entries[0].digest == digest
    assert own_containers(docker_sandbox) == []
