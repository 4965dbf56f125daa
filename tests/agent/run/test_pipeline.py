"""One task through a real agent: real Redis, git, uv venvs and subprocesses, in burst mode."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from overnight.agent.config import AgentConfig
from overnight.agent.gpus.inventory import FakeInventory
from overnight.queue import keys
from overnight.queue.cancel import request_cancel
from overnight.queue.failures import FailureKind
from overnight.queue.records import Phase, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import BlobRef, Requirements, Snapshot
from tests.fixtures.agents import (
    Background,
    agent_config,
    ended,
    enqueue,
    log_text,
    make_daemon,
    run_burst,
    snapshot_of,
    start_agent,
    wait_for,
    wait_status,
)
from tests.fixtures.docker import DockerSandbox
from tests.fixtures.gitrepo import Repo, git, make_repo
from tests.fixtures.gitserver import hanging_ssh, private_remote
from tests.fixtures.services import free_port

pytestmark = pytest.mark.slow


class ConfigFor(Protocol):
    """The ``config_for`` fixture: a test agent's config with ``fields`` changed."""

    def __call__(self, **fields: object) -> AgentConfig: ...


@pytest.fixture
def config_for(redis_url: str, tmp_path: Path, venv_cache: Path) -> ConfigFor:
    def make(**fields: object) -> AgentConfig:
        return agent_config(redis_url, tmp_path / "agent", venv_cache, **fields)

    return make


def test_task_runs_its_recorded_tree_in_a_venv(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, venv_cache: Path
) -> None:
    script = project.path / "job.py"
    project.write("job.py", "print(open('extra.txt').read())\n" + script.read_text())
    project.write("extra.txt", "untracked file arrived")
    record = enqueue(agent_store, project, "--lr", "0.1", name="first")
    run_burst(config_for())
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED, done.error
    assert done.exit_code == 0
    assert done.agent == "agent-a"
    assert [h.status for h in done.history] == [
        TaskStatus.QUEUED,
        TaskStatus.PREPARING,
        TaskStatus.RUNNING,
        TaskStatus.FINISHED,
    ]
    assert done.extra["environment"]["mode"] == "venv"
    text = log_text(agent_store, record.id)
    assert f"task {record.id} args --lr 0.1" in text
    assert "untracked file arrived" in text
    assert "OVERNIGHT_TASK_NAME=first" in text
    assert "OVERNIGHT_ATTEMPT=0" in text
    assert "OVERNIGHT_QUEUE=q" in text
    assert "OVERNIGHT_AGENT=agent-a" in text
    assert f"OVERNIGHT_AGENT_PID={os.getpid()}" in text  # this test runs the agent
    assert "CUDA_VISIBLE_DEVICES=" in text.splitlines()
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in text
    assert f"VIRTUAL_ENV={venv_cache}" in text
    assert not (Path(config_for().workspace_dir) / "tasks" / record.id).exists()


def test_second_task_with_the_same_requirements_installs_nothing(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    config = config_for(cache_dir=str(tmp_path / "fresh-venvs"))
    cold = enqueue(agent_store, project, "--n", "1")
    run_burst(config)
    warm = enqueue(agent_store, project, "--n", "2")
    run_burst(config)
    first, second = agent_store.get(cold.id), agent_store.get(warm.id)
    assert first.status is second.status is TaskStatus.FINISHED
    assert first.extra["environment"]["built"] is True
    assert second.extra["environment"]["built"] is False
    assert first.extra["environment"]["key"] == second.extra["environment"]["key"]
    assert "reusing venv" in log_text(agent_store, warm.id)


def test_keep_workspaces_leaves_the_tree(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    config = config_for(keep_workspaces=True)
    record = enqueue(agent_store, project)
    run_burst(config)
    assert agent_store.get(record.id).status is TaskStatus.FINISHED
    assert (config.workspace_path / "tasks" / record.id / "job.py").is_file()


def test_nonzero_exit_is_failed_in_the_run_phase(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    record = enqueue(agent_store, project, "--exit", "3")
    run_burst(config_for())
    failed = agent_store.get(record.id)
    assert failed.status is TaskStatus.FAILED
    assert (failed.phase, failed.exit_code) == (Phase.RUN, 3)
    assert failed.failure is FailureKind.RUN
    assert failed.error == "exited with 3 (last output: done)"
    assert "[overnight] failed in run: exited with 3 (last output: done)" in log_text(
        agent_store, record.id
    )


CRASH = """\
import atexit, sys
atexit.register(lambda: print("wandb: Synced 5 W&B file(s)", flush=True))
print("step 900 loss nan", flush=True)
raise FloatingPointError("loss is nan at step 900")
"""


def test_a_crash_is_recorded_with_its_exception_line(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    snap = _replace_spec(snapshot_of(project), argv=("python", "-c", CRASH))
    record = enqueue(agent_store, project, snapshot=snap)
    run_burst(config_for())
    failed = agent_store.get(record.id)
    assert (failed.status, failed.exit_code) == (TaskStatus.FAILED, 1)
    assert failed.error == "exited with 1: FloatingPointError: loss is nan at step 900"


def test_timeout_stops_the_task_and_says_so(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    record = enqueue(agent_store, project, "--sleep", "60", timeout=1.0)
    run_burst(config_for(grace=1.0))
    failed = agent_store.get(record.id)
    assert failed.status is TaskStatus.FAILED
    assert (failed.phase, failed.error) == (Phase.RUN, "timed out after 1s")


def _replace_spec(snapshot: Snapshot, **changes: object) -> Snapshot:
    return Snapshot(spec=dataclasses.replace(snapshot.spec, **changes), blobs=snapshot.blobs)  # type: ignore[arg-type]


def _failure(store: TaskStore, task_id: str) -> tuple[Phase | None, str]:
    record = store.get(task_id)
    assert record.status is TaskStatus.FAILED, (record.status, record.error)
    assert record.error and "\n" not in record.error
    return record.phase, record.error


def test_every_run_time_failure_is_one_line_and_the_agent_goes_on(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    """Each broken task fails with its phase and a specific error; a good one still finishes."""
    base = snapshot_of(project)
    broken: dict[str, Snapshot] = {}

    broken["command"] = _replace_spec(base, argv=("overnight-no-such-command",))

    project.write("job.py", "print('changed')\n")
    dirty = snapshot_of(project)
    bad_patch = dirty.blob(dirty.spec.patch).replace(b"print('changed')", b"print('other')")  # type: ignore[union-attr]
    bad_patch = bad_patch.replace(b"import os", b"import nothing")
    ref = BlobRef.of(bad_patch)
    broken["patch"] = Snapshot(
        spec=dataclasses.replace(dirty.spec, patch=ref), blobs={ref.sha256: bad_patch}
    )
    project.git("checkout", "--", "job.py")

    broken["remote"] = _replace_spec(
        base, repo=dataclasses.replace(base.spec.repo, url=f"http://127.0.0.1:{free_port()}/r.git")
    )
    broken["commit"] = _replace_spec(
        base, repo=dataclasses.replace(base.spec.repo, commit="1234567" + "0" * 33)
    )
    broken["requirements"] = _replace_spec(
        base,
        requirements=Requirements("requirements.txt", "--no-index\novernight-no-such-pkg==1.0\n"),
    )
    ids = {what: enqueue(agent_store, project, snapshot=snap).id for what, snap in broken.items()}

    newer = enqueue(agent_store, project)
    spec = json.loads(agent_store.redis.get(keys.spec(newer.spec_id)) or b"{}")
    corrupt_spec = enqueue(agent_store, project, "--other")
    agent_store.redis.set(keys.spec(newer.spec_id), json.dumps({**spec, "version": 99}))
    agent_store.redis.set(keys.spec(corrupt_spec.spec_id), b"{not json")
    good = enqueue(agent_store, project, "--good")

    run_burst(config_for())

    phase, error = _failure(agent_store, ids["command"])
    assert (phase, error) == (Phase.RUN, "command not found: overnight-no-such-command")
    phase, error = _failure(agent_store, ids["patch"])
    assert phase is Phase.WORKSPACE and "patch" in error
    phase, error = _failure(agent_store, ids["remote"])
    assert phase is Phase.WORKSPACE and "127.0.0.1" in error
    phase, error = _failure(agent_store, ids["commit"])
    assert phase is Phase.WORKSPACE and "1234567" in error
    phase, error = _failure(agent_store, ids["requirements"])
    assert phase is Phase.ENVIRONMENT and "overnight-no-such-pkg" in error
    assert error.endswith("; fix the requirements and enqueue again (a retry reuses these)")
    assert "No solution found" in log_text(agent_store, ids["requirements"])
    failed_on = {what: agent_store.get(i).extra.get("failed_on") for what, i in ids.items()}
    assert failed_on == {what: "requirements" if what == "requirements" else None for what in ids}
    phase, error = _failure(agent_store, newer.id)
    assert phase is Phase.AGENT and "schema version 99" in error
    phase, error = _failure(agent_store, corrupt_spec.id)
    assert phase is Phase.AGENT and "not valid JSON" in error
    assert agent_store.get(good.id).status is TaskStatus.FINISHED
    kinds = {what: agent_store.get(i).failure for what, i in ids.items()}
    assert kinds == {
        what: FailureKind.RUN if what == "command" else FailureKind.SETUP for what in ids
    }
    assert agent_store.get(newer.id).failure is FailureKind.SETUP
    assert agent_store.get(good.id).failure is None


FAILS_FIRST = "import os, sys; sys.exit(3 if os.environ['OVERNIGHT_ATTEMPT'] == '0' else 0)"


def test_a_run_failure_is_retried_only_when_retry_on_names_it(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    snap = _replace_spec(snapshot_of(project), argv=("python", "-c", FAILS_FIRST))
    default = enqueue(agent_store, project, snapshot=snap, retries=1)
    named = enqueue(agent_store, project, snapshot=snap, retries=1, retry_on=("infra", "run"))
    run_burst(config_for())
    kept = agent_store.get(default.id)
    assert (kept.status, kept.failure, kept.attempt) == (TaskStatus.FAILED, FailureKind.RUN, 0)
    again = agent_store.get(named.id)
    assert (again.status, again.attempt, again.failure) == (TaskStatus.FINISHED, 1, None)
    statuses = [h.status for h in again.history]
    assert statuses.count(TaskStatus.FAILED) == 1 and statuses[-1] is TaskStatus.FINISHED
    assert any("attempt 2 of 2, after a run failure" in h.note for h in again.history)


def test_corrupt_record_is_refused_and_the_agent_goes_on(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    bad = enqueue(agent_store, project)
    good = enqueue(agent_store, project, "--good")
    agent_store.redis.set(keys.task(bad.id), b'{"id": "truncated')
    run_burst(config_for())
    assert agent_store.get(good.id).status is TaskStatus.FINISHED
    queue = Queue("q", connection=agent_store.redis, serializer=JSONSerializer)
    assert bad.id in queue.failed_job_registry.get_job_ids()


def test_foreign_job_is_refused_never_run(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    marker = tmp_path / "pwned"
    queue = Queue("q", connection=agent_store.redis, serializer=JSONSerializer)
    queue.enqueue("os.system", f"touch {marker}", job_id="foreign")
    good = enqueue(agent_store, project)
    run_burst(config_for())
    assert not marker.exists()
    assert "foreign" in queue.failed_job_registry.get_job_ids()
    assert agent_store.get(good.id).status is TaskStatus.FINISHED


def test_gpus_are_assigned_through_cuda_variables(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    record = enqueue(agent_store, project, gpus=1)
    too_big = enqueue(agent_store, project, gpus=3)
    run_burst(config_for(), gpu_ids=("0", "1"), inventory=FakeInventory.with_gpus(2))
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED
    assert len(done.gpu_ids) == 1
    assert f"CUDA_VISIBLE_DEVICES={done.gpu_ids[0]}" in log_text(agent_store, record.id)
    waiting = agent_store.get(too_big.id)
    assert waiting.status is TaskStatus.QUEUED
    assert any("needs 3 GPUs" in note for note in waiting.notes)


def test_two_cpu_slots_run_two_tasks_at_once(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    waiter = enqueue(agent_store, project, "--wait-for", str(flag), timeout=60.0)
    toucher = enqueue(agent_store, project, "--touch", str(flag))
    run_burst(config_for(cpu_slots=2))
    assert agent_store.get(toucher.id).status is TaskStatus.FINISHED
    assert agent_store.get(waiter.id).status is TaskStatus.FINISHED


def test_cancel_while_running(agent_store: TaskStore, project: Repo, config_for: ConfigFor) -> None:
    record = enqueue(agent_store, project, "--sleep", "60")
    agent = Background(make_daemon(config_for(grace=2.0)))
    try:
        wait_for(
            lambda: (
                "done" not in log_text(agent_store, record.id)
                and "pid=" in log_text(agent_store, record.id)
            ),
            what="the task to start",
        )
        request_cancel(agent_store, record.id)
        canceled = wait_status(agent_store, record.id, TaskStatus.CANCELED)
    finally:
        agent.stop()
    assert canceled.phase is Phase.RUN
    assert "cancel requested" in log_text(agent_store, record.id)


@pytest.fixture
def hanging_index() -> Iterator[str]:
    """An index URL whose server accepts connections and never answers (a build that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_cancel_during_the_environment_build(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path, hanging_index: str
) -> None:
    snap = _replace_spec(
        snapshot_of(project),
        requirements=Requirements("requirements.txt", f"--index-url {hanging_index}\nsomepkg\n"),
    )
    record = enqueue(agent_store, project, snapshot=snap)
    agent = Background(make_daemon(config_for(cache_dir=str(tmp_path / "venvs"))))
    try:
        wait_for(
            lambda: (
                "installing" in log_text(agent_store, record.id)
                or "requirement(s)" in log_text(agent_store, record.id)
            ),
            what="the build to start",
        )
        assert agent_store.get(record.id).status is TaskStatus.PREPARING
        request_cancel(agent_store, record.id)
        canceled = wait_status(agent_store, record.id, TaskStatus.CANCELED)
    finally:
        agent.stop()
    assert canceled.phase is Phase.ENVIRONMENT


def test_cancel_during_the_clone(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    command, ssh_pid = hanging_ssh(tmp_path)
    project.git("remote", "set-url", "origin", "ssh://git@lab.invalid/project.git")
    record = enqueue(agent_store, project)
    agent = Background(make_daemon(config_for(git_ssh_command=command)))
    try:
        wait_for(ssh_pid.exists, what="git to call ssh")
        assert agent_store.get(record.id).status is TaskStatus.PREPARING
        request_cancel(agent_store, record.id)
        canceled = wait_status(agent_store, record.id, TaskStatus.CANCELED)
    finally:
        agent.stop()
    assert canceled.phase is Phase.WORKSPACE
    assert canceled.history[-1].note == "canceled during workspace"
    wait_for(lambda: ended(int(ssh_pid.read_text())), what="ssh to be killed")


def test_private_remotes_open_with_the_agents_token_and_fail_naming_the_host_without(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    """Through ``overnight agent daemon``: a token in its settings opens one private remote; a
    task on another private remote fails at once, naming the host, instead of prompting."""
    other = make_repo(tmp_path / "other", name="other")
    assert project.origin is not None and other.origin is not None
    with (
        private_remote(project.origin, "s3cret") as url,
        private_remote(other.origin, "unknown-to-the-agent") as other_url,
    ):
        project.git("remote", "set-url", "origin", url)
        other.git("remote", "set-url", "origin", other_url)
        opened = enqueue(agent_store, project)
        refused = submit(
            agent_store,
            take_snapshot(other.path, ["python", "train.py"], SnapshotOptions()),
            TaskOptions(queue="q"),
        )
        prefix = url.rsplit("/", 1)[0] + "/"
        agent = start_agent(config_for(git_tokens={prefix: "s3cret"}), tmp_path, "--burst")
        assert agent.wait() == 0, agent.output()
    done = agent_store.get(opened.id)
    assert done.status is TaskStatus.FINISHED, done.error
    phase, error = _failure(agent_store, refused.id)
    assert phase is Phase.WORKSPACE
    assert error.startswith(f"cannot reach {other_url}: ")
    assert "no working credentials for 127.0.0.1" in error
    assert "s3cret" not in log_text(agent_store, opened.id) + agent.output()


_PRINT_ENV = "import os\nfor k in ('AGENT_ONLY', 'SHARED', 'TASK_ONLY', 'OVERNIGHT_TASK_ID'):\n    print(k + '=' + os.environ.get(k, '-'))\n"


def test_env_is_the_agents_then_the_tasks_then_overnights_own(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    snap = _replace_spec(
        snapshot_of(project),
        argv=("python", "-c", _PRINT_ENV),
        env={"SHARED": "task", "TASK_ONLY": "t", "OVERNIGHT_TASK_ID": "spoofed"},
    )
    record = enqueue(agent_store, project, snapshot=snap)
    config = config_for(env={"AGENT_ONLY": "a", "SHARED": "agent"})
    agent = start_agent(config, tmp_path, "--burst")  # the agent's env setting, as a user sets it
    assert agent.wait() == 0, agent.output()
    assert agent_store.get(record.id).status is TaskStatus.FINISHED
    assert log_text(agent_store, record.id).splitlines()[-4:] == [
        "AGENT_ONLY=a",
        "SHARED=task",
        "TASK_ONLY=t",
        f"OVERNIGHT_TASK_ID={record.id}",
    ]


def test_a_python_the_agent_lacks_is_said_in_the_log_and_on_the_record(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    record = enqueue(
        agent_store, project, snapshot=_replace_spec(snapshot_of(project), python="3.99.1")
    )
    run_burst(config_for())
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED, done.error
    warning = "recorded Python 3.99 not found on this agent"
    assert any(note.startswith(warning) for note in done.notes), done.notes
    assert f"[overnight] warning: {warning}" in log_text(agent_store, record.id)


def test_the_tasks_own_grace_outranks_the_agents(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    stubborn = "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('pid=%d' % os.getpid(), flush=True)\ntime.sleep(120)\n"
    snap = _replace_spec(snapshot_of(project), argv=("python", "-c", stubborn))
    record = enqueue(agent_store, project, snapshot=snap, grace=0.5)
    agent = Background(
        make_daemon(config_for(grace=600.0))
    )  # the agent's grace would outlast the test
    try:
        wait_for(lambda: "pid=" in log_text(agent_store, record.id), what="the task to start")
        request_cancel(agent_store, record.id)
        canceled = wait_status(agent_store, record.id, TaskStatus.CANCELED)
    finally:
        agent.stop()
    assert canceled.exit_code == -signal.SIGKILL
    assert canceled.history[-1].note == (
        "canceled while running; still running 0.5s after SIGTERM, it was killed with SIGKILL"
    )


def test_resources_and_hardware_are_recorded(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    import socket as sockets

    record = enqueue(agent_store, project, "--ticks", "5")
    run_burst(config_for(monitor_interval=0.2))
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED
    summary = done.extra["resources"]["summary"]
    assert summary["rss_mb"]["peak"] > 0
    assert "cpu_pct" in summary
    assert done.extra["hardware"]["host"] == sockets.gethostname()


@pytest.mark.docker
def test_a_task_runs_in_a_container_in_docker_mode(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, docker_sandbox: DockerSandbox
) -> None:
    argv = ("python3", "job.py", "--ticks", "15")
    snap = _replace_spec(snapshot_of(project), argv=argv)
    record = enqueue(agent_store, project, snapshot=snap)
    run_burst(config_for(monitor_interval=0.5), environment=docker_sandbox.environment())
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED, done.error
    assert done.extra["environment"]["mode"] == "docker"
    text = log_text(agent_store, record.id)
    assert f"task {record.id}" in text and "tick 2" in text
    assert "rss_mb" in done.extra["resources"]["summary"], done.extra["resources"]
    label = f"overnight.agent={docker_sandbox.agent_name}"
    assert docker_sandbox.client.containers.list(all=True, filters={"label": label}) == []


@pytest.mark.parametrize("url", [None, "file://{origin}", "ext::sh -c touch% {canary}"])
def test_a_local_repo_url_fails_naming_allow_local_repos_and_nothing_is_fetched(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path, url: str | None
) -> None:
    canary = tmp_path / "canary"
    snap = snapshot_of(project)  # its origin: a bare repo on this host, by path
    if url is not None:
        recorded = url.format(origin=project.origin, canary=canary)
        snap = _replace_spec(snap, repo=dataclasses.replace(snap.spec.repo, url=recorded))
    refused = enqueue(agent_store, project, snapshot=snap)
    run_burst(config_for(allow_local_repos=False))
    phase, error = _failure(agent_store, refused.id)
    assert phase is Phase.WORKSPACE
    assert error.startswith("repo.url ") and "is a local path or an unknown transport" in error
    assert error.endswith("set allow_local_repos on the agent (OVERNIGHT_ALLOW_LOCAL_REPOS=1)")
    assert not (tmp_path / "agent" / "workspaces" / "mirrors").exists()  # nothing fetched
    assert not canary.exists()


def test_with_allow_local_repos_a_local_origin_is_fetched(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    record = enqueue(agent_store, project)
    run_burst(config_for(allow_local_repos=True))
    assert agent_store.get(record.id).status is TaskStatus.FINISHED


def _add_submodule(project: Repo, url: str, path: str) -> None:
    project.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", url, path)
    project.commit(f"submodule {path}")
    project.push()


def test_a_submodule_url_naming_a_repo_on_the_agents_host_is_not_cloned(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    """The superproject is on a server; its .gitmodules (the task's own) names another user's
    repository on the agent's host by path."""
    private = make_repo(tmp_path / "private", name="private")
    private.write("SECRET.txt", "another user's work\n")
    private.commit("secret")
    private.push()
    assert project.origin is not None and private.origin is not None
    _add_submodule(project, str(private.origin), "vendor")
    with private_remote(project.origin, "s3cret") as url:
        project.git("remote", "set-url", "origin", url)
        record = enqueue(agent_store, project)
        prefix = url.rsplit("/", 1)[0] + "/"
        run_burst(config_for(allow_local_repos=False, git_tokens={prefix: "s3cret"}))
    phase, error = _failure(agent_store, record.id)
    assert phase is Phase.WORKSPACE
    assert error.startswith("cannot check out the submodules: transport 'file' not allowed")
    assert "OVERNIGHT_ALLOW_LOCAL_REPOS=1" in error
    assert list((tmp_path / "agent" / "workspaces").rglob("SECRET.txt")) == []


def test_a_relative_submodule_url_resolves_against_the_network_remote(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor, tmp_path: Path
) -> None:
    lib = make_repo(tmp_path, name="lib")  # its bare origin next to the project's
    lib.write("LIB.txt", "from the lib's server\n")
    lib.commit("lib")
    lib.push()
    assert project.origin is not None and lib.origin is not None
    _add_submodule(project, "../lib-origin.git", "lib")
    git(lib.origin, "update-server-info")  # served over dumb HTTP with the project's origin
    with private_remote(project.origin, "s3cret") as url:
        project.git("remote", "set-url", "origin", url)
        snap = _replace_spec(
            snapshot_of(project), argv=("python", "-c", "print(open('lib/LIB.txt').read())")
        )
        record = enqueue(agent_store, project, snapshot=snap)
        prefix = url.rsplit("/", 1)[0] + "/"
        run_burst(config_for(allow_local_repos=False, git_tokens={prefix: "s3cret"}))
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED, done.error
    assert "from the lib's server" in log_text(agent_store, record.id)


def _output_numbers(store: TaskStore, task_id: str) -> Iterator[int]:
    """The number each stored line of the burst starts with, read in chunks."""
    start = "-"
    while True:
        chunk: Any = store.redis.xrange(keys.log(task_id), min=start, count=20_000)
        if not chunk:
            return
        for _, fields in chunk:
            number, _, rest = bytes(fields[b"line"]).partition(b" ")
            if rest == b"x" * 91:  # not the agent's lines nor the build's
                yield int(number)
        start = "(" + bytes(chunk[-1][0]).decode()


@pytest.mark.slow
def test_a_60_mb_burst_under_the_log_cap_keeps_every_line(
    agent_store: TaskStore, project: Repo, config_for: ConfigFor
) -> None:
    """Printed faster than Redis takes it: the task waits on its writes, nothing is dropped."""
    lines = 600_000  # 100 bytes each: about 60 MB, under a 100 MB cap
    burst = f"import sys\nw = sys.stdout.write\nfor i in range({lines}): w(f'{{i:07d}} ' + 'x' * 91 + '\\n')\n"
    snap = _replace_spec(snapshot_of(project), argv=("python", "-c", burst))
    record = enqueue(agent_store, project, snapshot=snap)
    run_burst(config_for(log_cap_mb=100))
    done = agent_store.get(record.id)
    assert done.status is TaskStatus.FINISHED, done.error
    assert "dropped_log_lines" not in done.extra.get("run", {})
    assert agent_store.logs.trimmed(record.id)[0] == 0
    seen = 0
    for number in _output_numbers(agent_store, record.id):
        assert number == seen, f"line {seen} is missing"
        seen += 1
    assert seen == lines
