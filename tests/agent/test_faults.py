"""Faults injected into real agent processes: SIGKILL, a Redis restart, SIGTERM once and twice."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.queue import Queue

from overnight.agent.config import AgentConfig
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import (
    AgentProcess,
    agent_config,
    enqueue,
    log_text,
    process_gone,
    start_agent,
    start_agent_group,
    wait_for,
    wait_status,
)
from tests.fixtures.gitrepo import Repo
from tests.fixtures.services import RedisServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def config(redis_url: str, tmp_path: Path, venv_cache: Path) -> AgentConfig:
    return agent_config(redis_url, tmp_path / "agent", venv_cache)


def stop_cleanly(agent: AgentProcess) -> None:
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0, agent.output()


def kill_all(*agents: AgentProcess | None) -> None:
    for agent in agents:
        if agent is not None:
            agent.kill()


def task_pid(store: TaskStore, task_id: str) -> int:
    found = wait_for(
        lambda: re.search(r"^pid=(\d+)$", log_text(store, task_id), re.M), what="the task's pid"
    )
    return int(found.group(1))


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def test_sigkilled_agent_task_is_lost_requeued_and_finished_elsewhere(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    record = enqueue(agent_store, project, "--sleep-first", "60", retries=1)
    first = start_agent(config, tmp_path, "--queue", "q")
    second = None
    orphan = None
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        orphan = task_pid(agent_store, record.id)
        first.kill()
        # A live agent notices the silence (no CLI command reaps here) and takes the retry.
        second = start_agent(dataclasses.replace(config, name="agent-b"), tmp_path)
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED)
        stop_cleanly(second)
    finally:
        kill_all(first, second)
        if orphan is not None:
            kill_group(orphan)
    statuses = [h.status for h in done.history]
    assert TaskStatus.LOST in statuses
    assert statuses[statuses.index(TaskStatus.LOST) + 1] is TaskStatus.QUEUED
    assert (done.agent, done.attempt) == ("agent-b", 1)


def test_a_quiet_task_dies_with_its_agent_and_never_overlaps_its_retry(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    """SIGKILL of the agent's whole process group, as a service manager or the OOM killer
    leaves it; the task runs in a session of its own and writes nothing the agent reads. The
    other agent has a workspace folder of its own (another host, as far as it can tell), so
    it never sees the first one's processes."""
    ledger = tmp_path / "ledger"
    record = enqueue(agent_store, project, "--ledger", str(ledger), retries=1)
    first = start_agent_group(config, tmp_path, "--queue", "q")
    second = None
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        wait_for(ledger.exists, what="the first attempt to write its ledger")
        second = serving = start_agent(elsewhere(config, tmp_path, "agent-b"), tmp_path)
        wait_for(lambda: "serving" in serving.output(), what="agent-b to serve")
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.wait()
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED)
        stop_cleanly(second)
    finally:
        kill_all(first, second)
    assert (done.agent, done.attempt) == ("agent-b", 1)
    attempts = attempts_in(ledger)
    assert sorted(attempts) == ["0", "1"]
    assert max(attempts["0"]) < min(attempts["1"]), "the first attempt ran on beside its retry"
    lines = log_text(agent_store, record.id).splitlines()
    starts = [line for line in lines if line.endswith("starts here")]
    assert starts == [
        "[overnight] attempt 1 of 2 starts here",
        "[overnight] attempt 2 of 2 starts here",
    ]
    assert lines.index(starts[1]) > lines.index(
        "[overnight] agent agent-a: rebuilding the working tree"
    )


def test_a_killed_agents_task_keeps_the_resource_report_written_while_it_ran(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    from overnight.commands.views import show_lines

    record = enqueue(agent_store, project, "--sleep-first", "60")
    timed = dataclasses.replace(config, monitor_interval=0.1, report_interval=0.4)
    agent = start_agent(timed, tmp_path, "--queue", "q")
    orphan = None
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        orphan = task_pid(agent_store, record.id)

        def reported() -> dict[str, Any] | None:
            now = agent_store.get(record.id)
            summary = now.extra.get("resources", {}).get("summary", {})
            return summary if now.status is TaskStatus.RUNNING and "rss_mb" in summary else None

        during = wait_for(reported, what="a resource report on the running task")
        agent.kill()

        def reaped() -> TaskRecord | None:
            reap_lost(agent_store, settle=0)  # what any command does
            now = agent_store.get(record.id)
            return now if now.status is TaskStatus.LOST else None

        lost = wait_for(reaped, what="the task to be marked lost")
    finally:
        kill_all(agent)
        if orphan is not None:
            kill_group(orphan)
    assert lost.status is TaskStatus.LOST
    assert during["rss_mb"]["peak"] > 0
    assert lost.extra["resources"]["summary"]["rss_mb"]["peak"] >= during["rss_mb"]["peak"]
    text = "\n".join(show_lines(lost, None, "not read"))
    assert "resources:" in text and "RSS: peak" in text, text
    assert "ran on:" in text, text


def test_an_agent_start_stops_the_quiet_task_a_killed_agent_left_running(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    record = enqueue(agent_store, project, "--sleep-first", "120")  # says its pid, then nothing
    first = start_agent(config, tmp_path, "--queue", "q")
    outsider = None
    orphan = None
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        orphan = task_pid(agent_store, record.id)
        first.kill_unguarded()
        time.sleep(1.0)
        assert not process_gone(orphan)  # quiet, it never notices its agent is gone
        # A task process of another workspace folder (another agent, maybe another Redis).
        outsider = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            cwd=tmp_path,
            env={**os.environ, "OVERNIGHT_TASK_ID": record.id},
            start_new_session=True,
        )
        wait_for(
            lambda: reap_lost(agent_store, settle=0) or None, what="the task to be marked lost"
        )
        second = start_agent(dataclasses.replace(config, name="agent-b"), tmp_path, "--burst")
        assert second.wait() == 0, second.output()
        assert wait_for(lambda: process_gone(orphan), what="the stray task process to stop")
        assert f"stopping the processes of task {record.id}" in second.output()
        assert outsider.poll() is None  # not in this agent's workspace folder: left alone
        assert not (config.workspace_path / "tasks" / record.id).exists()
    finally:
        kill_all(first)
        if orphan is not None:
            kill_group(orphan)
        if outsider is not None:
            outsider.kill()
            outsider.wait()


@pytest.mark.parametrize("name", ["agent-a", "agent-b"])
def test_an_agent_started_after_a_kill_takes_back_the_quiet_task_at_once(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path, name: str
) -> None:
    """Long before the task's heartbeat expires: under the same name (systemd's Restart=), or
    another (the default name is <host>-<pid>, new at each start by hand). The killed agent's
    pid, gone, proves its task is nobody's."""
    slow = dataclasses.replace(config, lost_ttl=600.0)  # nothing here waits for the reaper
    record = enqueue(agent_store, project, "--sleep-first", "120", retries=1)
    first = start_agent(slow, tmp_path, "--queue", "q")
    again = None
    orphan = None
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        orphan = task_pid(agent_store, record.id)
        first.kill_unguarded()
        assert not process_gone(orphan)  # quiet: it would hold its GPUs on
        again = start_agent(dataclasses.replace(slow, name=name), tmp_path, "--burst")
        assert again.wait() == 0, again.output()
        assert wait_for(
            lambda: process_gone(orphan), what="the killed agent's task process to stop"
        )
    finally:
        kill_all(first, again)
        if orphan is not None:
            kill_group(orphan)
    done = agent_store.get(record.id)
    assert (done.status, done.agent, done.attempt) == (TaskStatus.FINISHED, name, 1)
    notes = [h.note for h in done.history]
    assert "agent agent-a died while the task was running, leaving its process running" in notes
    assert f"its agent agent-a (pid {first.proc.pid}) is gone" in again.output()


def test_a_running_agent_stops_the_quiet_task_of_a_dead_neighbour_and_runs_it_again(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    """Two agents share a host and its workspace folder; one dies and is not restarted."""
    slow = dataclasses.replace(config, lost_ttl=600.0, stray_interval=0.5)
    record = enqueue(agent_store, project, "--sleep-first", "120", retries=1)
    first = start_agent(slow, tmp_path, "--queue", "q")
    neighbour = None
    orphan = None
    try:
        wait_status(agent_store, record.id, TaskStatus.RUNNING)
        orphan = task_pid(agent_store, record.id)
        neighbour = serving = start_agent(dataclasses.replace(slow, name="agent-b"), tmp_path)
        wait_for(lambda: "serving" in serving.output(), what="agent-b to serve")
        first.kill_unguarded()
        assert wait_for(lambda: process_gone(orphan), what="the dead agent's task process to stop")
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED)
        stop_cleanly(neighbour)
    finally:
        kill_all(first, neighbour)
        if orphan is not None:
            kill_group(orphan)
    assert (done.agent, done.attempt) == ("agent-b", 1)
    assert f"its agent agent-a (pid {first.proc.pid}) is gone" in neighbour.output()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, restartable without losing its data (saved on shutdown)."""
    server = RedisServer(port=free_port(), workdir=tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restart_mid_task_the_task_runs_on_and_its_end_is_recorded(
    own_redis: RedisServer, project: Repo, tmp_path: Path, venv_cache: Path
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    store = TaskStore(client)
    config = agent_config(own_redis.url, tmp_path / "agent", venv_cache, lost_ttl=30.0)
    record = enqueue(store, project, "--ticks", "15")
    agent = start_agent(config, tmp_path, "--queue", "q")
    try:
        wait_for(lambda: "tick 2" in log_text(store, record.id), what="the task to tick")
        pid = task_pid(store, record.id)
        client.shutdown(save=True)  # Redis goes away while the task runs
        assert own_redis.proc is not None
        own_redis.proc.wait(10)
        wait_for(lambda: process_gone(pid), what="the task to end while Redis is away")
        time.sleep(1.0)  # the agent tries to write the end and keeps retrying
        assert agent.proc.poll() is None, agent.output()
        own_redis.start()
        done = wait_status(store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        assert done.status is TaskStatus.FINISHED, done.error
        lines = log_text(store, record.id).splitlines()
        assert [line for line in lines if line.startswith("tick ")] == [
            f"tick {i}" for i in range(15)
        ]
        assert lines.index("tick 14") < lines.index("done")
        later = enqueue(store, project)  # and it goes on serving
        assert wait_status(store, later.id, TaskStatus.FINISHED).agent == config.name
        assert agent.proc.poll() is None, agent.output()
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0, agent.output()
    finally:
        agent.kill()
        client.close()


def test_a_redis_down_longer_than_heartbeats_live_costs_no_agent_its_task(
    own_redis: RedisServer, project: Repo, tmp_path: Path, venv_cache: Path
) -> None:
    """Two agents; Redis comes back with every heartbeat expired, and whichever agent is back
    first must not reap the other's task while that one is still waiting to reconnect."""
    client = redis.Redis.from_url(own_redis.url)
    store = TaskStore(client)
    config = agent_config(own_redis.url, tmp_path / "agent", venv_cache, max_backoff=3.0)
    records = [enqueue(store, project, "--ticks", "40") for _ in range(2)]
    agents = [
        start_agent(dataclasses.replace(config, name=name), tmp_path, "--queue", "q")
        for name in ("agent-a", "agent-b")
    ]
    try:
        wait_for(
            lambda: all("tick 2" in log_text(store, r.id) for r in records),
            what="the tasks to tick",
        )
        assert {store.get(r.id).agent for r in records} == {"agent-a", "agent-b"}
        client.shutdown(save=True)
        assert own_redis.proc is not None
        own_redis.proc.wait(10)
        time.sleep(config.lost_ttl + 2.0)  # every heartbeat expires while Redis is down
        own_redis.start()
        done = [wait_status(store, r.id, TaskStatus.FINISHED, TaskStatus.LOST) for r in records]
        for agent in agents:
            stop_cleanly(agent)
    finally:
        kill_all(*agents)
        client.close()
    assert [d.status for d in done] == [TaskStatus.FINISHED] * 2, [d.history for d in done]


def test_sigterm_finishes_the_running_task_and_takes_no_new_one(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    running = enqueue(agent_store, project, "--ticks", "10")
    agent = start_agent(config, tmp_path, "--queue", "q")
    try:
        wait_status(agent_store, running.id, TaskStatus.RUNNING)
        agent.signal(signal.SIGTERM)
        later = enqueue(agent_store, project)
        assert agent.wait() == 0, agent.output()
    finally:
        agent.kill()
    assert agent_store.get(running.id).status is TaskStatus.FINISHED
    assert agent_store.get(later.id).status is TaskStatus.QUEUED


def test_a_service_stop_signalling_agent_and_task_at_once_requeues_the_task(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    """What systemctl stop (and a reboot) does with KillMode=control-group, the default."""
    flag = tmp_path / "flag"
    record = enqueue(agent_store, project, "--wait-for", str(flag))
    agent = start_agent(config, tmp_path, "--queue", "q")
    pid = None
    try:
        pid = task_pid(agent_store, record.id)
        os.killpg(pid, signal.SIGTERM)
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0, agent.output()
    finally:
        agent.kill()
        if pid is not None:
            kill_group(pid)
    requeued = agent_store.get(record.id)
    assert requeued.status is TaskStatus.QUEUED, requeued.error
    assert "killed by SIGTERM while agent agent-a was stopping" in requeued.history[-1].note
    flag.touch()
    again = start_agent(config, tmp_path, "--burst")
    assert again.wait() == 0, again.output()
    done = agent_store.get(record.id)
    assert (done.status, done.attempt) == (TaskStatus.FINISHED, 0)


def test_second_sigterm_stops_the_task_and_requeues_it_at_the_front(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    running = enqueue(agent_store, project, "--sleep", "60")
    agent = start_agent(dataclasses.replace(config, grace=2.0), tmp_path, "--queue", "q")
    try:
        pid = task_pid(agent_store, running.id)
        behind = enqueue(agent_store, project)
        agent.signal(signal.SIGTERM)
        time.sleep(0.3)
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0, agent.output()
    finally:
        agent.kill()
    assert process_gone(pid)
    requeued = agent_store.get(running.id)
    assert requeued.status is TaskStatus.QUEUED
    assert "requeued at the front" in requeued.history[-1].note
    assert Queue("q", connection=agent_store.redis).job_ids == [running.id, behind.id]


@pytest.mark.docker
def test_docker_agent_restarted_mid_task_adopts_the_container(
    agent_store: TaskStore, project: Repo, tmp_path: Path, venv_cache: Path, docker_sandbox: Any
) -> None:
    from tests.fixtures.agents import snapshot_of

    config = docker_config(agent_store, tmp_path, venv_cache, docker_sandbox, lost_ttl=30.0)
    spec = snapshot_of(project)
    argv = ("python3", "job.py", "--ticks", "20")
    snap = type(spec)(spec=dataclasses.replace(spec.spec, argv=argv), blobs=spec.blobs)
    record = enqueue(agent_store, project, snapshot=snap)
    first = start_agent(config, tmp_path, "--queue", "q")
    second = None
    try:
        wait_for(lambda: "tick 3" in log_text(agent_store, record.id), what="the task to tick")
        first.kill()
        second = start_agent(config, tmp_path, "--queue", "q")
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        stop_cleanly(second)
    finally:
        kill_all(first, second)
    assert done.status is TaskStatus.FINISHED, done.error
    assert done.attempt == 0  # the same run, not a retry
    lines = log_text(agent_store, record.id).splitlines()
    ticks = [line for line in lines if line.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(20)]
    assert any("adopted" in line for line in lines)


@pytest.mark.docker
def test_a_docker_task_dies_with_its_agent_when_no_restart_adopts_it(
    agent_store: TaskStore, project: Repo, tmp_path: Path, venv_cache: Path, docker_sandbox: Any
) -> None:
    """The container waits for its agent to come back and adopt it, but not past the moment
    its task may be declared lost: the retry elsewhere never runs beside it."""
    from tests.fixtures.agents import snapshot_of

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the task's container runs as nobody
    config = docker_config(
        agent_store, tmp_path, venv_cache, docker_sandbox, docker_mounts=(f"{shared}:/shared",)
    )
    spec = snapshot_of(project)
    argv = ("python3", "job.py", "--ledger", "/shared/ledger")
    snap = type(spec)(spec=dataclasses.replace(spec.spec, argv=argv), blobs=spec.blobs)
    record = enqueue(agent_store, project, snapshot=snap, retries=1)
    ledger = shared / "ledger"
    other = f"{docker_sandbox.agent_name}-b"
    first = start_agent_group(config, tmp_path, "--queue", "q")
    second = None
    try:
        wait_for(ledger.exists, timeout=180, what="the first attempt to write its ledger")
        second = serving = start_agent(elsewhere(config, tmp_path, other), tmp_path)
        wait_for(lambda: "serving" in serving.output(), what="the other agent to serve")
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.wait()
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED, timeout=180)
        stop_cleanly(second)
    finally:
        kill_all(first, second)
        for container in docker_sandbox.client.containers.list(
            all=True, filters={"label": f"overnight.agent={other}"}
        ):
            container.remove(force=True, v=True)
    assert (done.agent, done.attempt) == (other, 1)
    attempts = attempts_in(ledger)
    assert sorted(attempts) == ["0", "1"]
    assert max(attempts["0"]) < min(attempts["1"]), "the first container ran on beside its retry"


def docker_config(
    store: TaskStore, tmp_path: Path, venv_cache: Path, sandbox: Any, **fields: Any
) -> AgentConfig:
    from tests.fixtures.docker import BASE_IMAGE

    return agent_config(
        agent_store_url(store),
        tmp_path / "agent",
        venv_cache,
        name=sandbox.agent_name,
        env_mode="docker",
        default_image=BASE_IMAGE,
        docker_image_repo=sandbox.repo,
        docker_cache_volume=sandbox.volume,
        docker_shm_size="64m",
        **fields,
    )


def elsewhere(config: AgentConfig, tmp_path: Path, name: str) -> AgentConfig:
    """Another agent with a workspace folder of its own: another host, as far as it can tell."""
    return dataclasses.replace(
        config,
        name=name,
        workspace_dir=str(tmp_path / name / "workspaces"),
        spill_dir=str(tmp_path / name / "spill"),
    )


def attempts_in(ledger: Path) -> dict[str, list[float]]:
    """The moments each attempt wrote to its ledger (``--ledger``), by attempt."""
    attempts: dict[str, list[float]] = {}
    for line in ledger.read_text().splitlines():
        attempt, moment = line.split()
        attempts.setdefault(attempt, []).append(float(moment))
    return attempts


def agent_store_url(store: TaskStore) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
