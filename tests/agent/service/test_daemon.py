"""The daemon loop in-process: registration, queue order, blocking pops, races, stopping."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from overnight.agent.config import AgentConfig
from overnight.queue.agents import AgentRegistry
from overnight.queue.records import Change, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    log_text,
    make_daemon,
    process_gone,
    run_burst,
    wait_for,
    wait_status,
)
from tests.fixtures.gitrepo import Repo

pytestmark = pytest.mark.slow


@pytest.fixture
def config(redis_url: str, tmp_path: Path, venv_cache: Path) -> AgentConfig:
    return agent_config(redis_url, tmp_path / "agent", venv_cache)


def task_pid(store: TaskStore, task_id: str) -> int:
    found = wait_for(
        lambda: re.search(r"^pid=(\d+)$", log_text(store, task_id), re.M), what="the task's pid"
    )
    return int(found.group(1))


def with_fields(config: AgentConfig, **fields: Any) -> AgentConfig:
    import dataclasses

    return dataclasses.replace(config, **fields)


def test_burst_exits_when_the_queues_are_empty(config: AgentConfig) -> None:
    daemon = run_burst(config)
    assert daemon.active_tasks() == []


def test_agent_is_listed_by_rq_and_overnight_while_it_serves(
    agent_store: TaskStore, config: AgentConfig
) -> None:
    agent = Background(make_daemon(with_fields(config, queues=("gpu", "cpu"))))
    try:
        rq_workers = wait_for(
            lambda: {w.name: w for w in Worker.all(connection=agent_store.redis)},
            what="the RQ worker entry",
        )
        assert rq_workers["agent-a"].queue_names() == ["gpu", "cpu"]
        (info,) = wait_for(lambda: AgentRegistry(agent_store.redis).list(), what="AgentInfo")
        assert (info.name, info.queues, info.env_mode, info.state) == (
            "agent-a",
            ("gpu", "cpu"),
            "venv",
            "idle",
        )
    finally:
        agent.stop()
    assert Worker.all(connection=agent_store.redis) == []
    assert AgentRegistry(agent_store.redis).list() == []


def test_an_idle_agent_takes_a_task_as_soon_as_it_is_queued(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    agent = Background(make_daemon(config))
    try:
        wait_for(lambda: AgentRegistry(agent_store.redis).list(), what="the agent to register")
        record = enqueue(agent_store, project)
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
    finally:
        agent.stop()
    assert done.status is TaskStatus.FINISHED


def test_first_queue_named_goes_first(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "order"
    low = enqueue(agent_store, project, "--marker", str(marker), queue="low")
    high = enqueue(agent_store, project, "--marker", str(marker), queue="high")
    run_burst(with_fields(config, queues=("high", "low")))
    assert marker.read_text().split() == [high.id, low.id]


def test_rq_counts_the_tasks_an_agent_ran(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    enqueue(agent_store, project)
    enqueue(agent_store, project, "--exit", "1")
    run_burst(config)
    counts = agent_store.redis.hmget(
        "rq:worker:agent-a", "successful_job_count", "failed_job_count"
    )
    assert counts == [b"1", b"1"]


def test_two_agents_racing_run_each_task_exactly_once(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    records = [enqueue(agent_store, project, "--marker", str(marker)) for _ in range(12)]
    agents = [
        Background(make_daemon(with_fields(config, name=name)), burst=True)
        for name in ("agent-a", "agent-b")
    ]
    for agent in agents:
        agent.thread.join(120)
    runs = marker.read_text().split()
    assert sorted(runs) == sorted(r.id for r in records)
    for record in records:
        done = agent_store.get(record.id)
        assert done.status is TaskStatus.FINISHED
        assert done.agent in ("agent-a", "agent-b")


def test_first_stop_drains_running_tasks_and_takes_no_new_ones(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    running = enqueue(agent_store, project, "--ticks", "10")
    agent = Background(make_daemon(config))
    wait_status(agent_store, running.id, TaskStatus.RUNNING)
    agent.daemon.request_stop()
    later = enqueue(agent_store, project)
    agent.thread.join(60)
    assert not agent.thread.is_alive()
    assert agent_store.get(running.id).status is TaskStatus.FINISHED
    assert agent_store.get(later.id).status is TaskStatus.QUEUED


def test_second_stop_requeues_running_tasks_at_the_front(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    running = enqueue(agent_store, project, "--sleep", "60")
    agent = Background(make_daemon(with_fields(config, grace=2.0)))
    wait_for(lambda: "pid=" in log_text(agent_store, running.id), what="the task to start")
    behind = enqueue(agent_store, project)
    agent.stop(force=True)
    requeued = agent_store.get(running.id)
    assert requeued.status is TaskStatus.QUEUED
    assert "requeued at the front" in requeued.history[-1].note
    queue = Queue("q", connection=agent_store.redis, serializer=JSONSerializer)
    assert queue.job_ids == [running.id, behind.id]


def test_a_task_killed_by_hand_fails_with_its_signal(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    record = enqueue(agent_store, project, "--wait-for", str(tmp_path / "never"))
    agent = Background(make_daemon(config))
    try:
        os.kill(task_pid(agent_store, record.id), signal.SIGTERM)
        failed = wait_status(agent_store, record.id, TaskStatus.FAILED)
    finally:
        agent.stop(force=True)
    assert failed.error is not None and failed.error.startswith("killed by SIGTERM"), failed.error
    assert failed.exit_code == -signal.SIGTERM


@pytest.mark.parametrize("how", ["signal", "shell"])
def test_a_task_stopped_along_with_its_agent_is_requeued_at_the_front(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path, how: str
) -> None:
    """systemd's stop (a reboot) sends SIGTERM to the agent and its tasks at once: the task
    ends, and it is the host's doing, not the run's."""
    flag = tmp_path / "flag"
    # Through a shell, a SIGTERM'd command comes back as exit code 143.
    args = ("--wait-for", str(flag)) + (("--exit", "143") if how == "shell" else ())
    record = enqueue(agent_store, project, *args)
    agent = Background(make_daemon(config))
    try:
        pid = task_pid(agent_store, record.id)
        behind = enqueue(agent_store, project)
        if how == "signal":
            os.killpg(pid, signal.SIGTERM)  # the task's signal may come first
            agent.daemon.request_stop()
        else:
            agent.daemon.request_stop()
            flag.touch()
        agent.thread.join(60)
        assert not agent.thread.is_alive()
    finally:
        agent.stop(force=True)
    requeued = agent_store.get(record.id)
    assert (requeued.status, requeued.attempt) == (TaskStatus.QUEUED, 0)
    how_it_ended = "killed by SIGTERM" if how == "signal" else "exited with 143"
    assert requeued.history[-1].note == (
        f"{how_it_ended} while agent agent-a was stopping (its service or host shutting down); "
        "requeued at the front"
    )
    queue = Queue("q", connection=agent_store.redis, serializer=JSONSerializer)
    assert queue.job_ids == [record.id, behind.id]


def _declare_lost(store: TaskStore, task_id: str) -> None:
    """What the reaper does once an agent's heartbeats of a task lapsed (cut off from Redis)."""
    store.transition(
        task_id,
        TaskStatus.LOST,
        expect={TaskStatus.RUNNING},
        note="agent agent-a stopped sending heartbeats",
    )
    store.requeue(task_id, note="attempt 2 of 2", new_attempt=True)


def test_a_run_whose_task_went_to_another_agent_is_stopped_and_not_recorded(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    record = enqueue(agent_store, project, "--wait-for", str(tmp_path / "never"), retries=1)
    agent = Background(make_daemon(config))
    try:
        pid = task_pid(agent_store, record.id)
        _declare_lost(agent_store, record.id)
        for status in (TaskStatus.PREPARING, TaskStatus.RUNNING):  # agent-b takes it
            agent_store.transition(record.id, status, Change(agent="agent-b"))
        wait_for(lambda: process_gone(pid), what="agent-a's run of the task to stop")
        later = enqueue(agent_store, project)  # its CPU slot is free again
        wait_status(agent_store, later.id, TaskStatus.FINISHED)
    finally:
        agent.stop(force=True)
    now = agent_store.get(record.id)
    assert (now.status, now.agent, now.attempt) == (TaskStatus.RUNNING, "agent-b", 1)
    assert (
        "[overnight] stopping this run: agent agent-a's heartbeats of this run (attempt 1) "
        "lapsed, and the task went on without it: it is running on agent agent-b now, as attempt 2"
    ) in log_text(agent_store, record.id)


def test_a_run_whose_task_was_requeued_stops_before_the_agent_takes_the_task_again(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    """With a free slot the agent pops the requeued task while its old run goes on: it waits
    for that run to stop instead of running the task twice."""
    record = enqueue(agent_store, project, "--sleep-first", "120", retries=1)
    agent = Background(make_daemon(with_fields(config, cpu_slots=2)))
    try:
        pid = task_pid(agent_store, record.id)
        _declare_lost(agent_store, record.id)
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED)
        assert process_gone(pid)
    finally:
        agent.stop(force=True)
    assert (done.agent, done.attempt) == ("agent-a", 1)
    assert [h.status for h in done.history] == [
        TaskStatus.QUEUED,
        TaskStatus.PREPARING,
        TaskStatus.RUNNING,
        TaskStatus.LOST,
        TaskStatus.QUEUED,
        TaskStatus.PREPARING,
        TaskStatus.RUNNING,
        TaskStatus.FINISHED,
    ]
    assert "it is queued now, as attempt 2" in log_text(agent_store, record.id)


def test_the_end_of_a_run_whose_task_went_elsewhere_is_not_written_over_the_new_run(
    agent_store: TaskStore, project: Repo, config: AgentConfig, tmp_path: Path
) -> None:
    """The run ends before a heartbeat could notice: the end's write checks the agent."""
    flag = tmp_path / "flag"
    record = enqueue(agent_store, project, "--wait-for", str(flag), retries=1)
    agent = Background(make_daemon(with_fields(config, heartbeat_interval=30.0, lost_ttl=60.0)))
    try:
        task_pid(agent_store, record.id)
        _declare_lost(agent_store, record.id)
        agent_store.transition(record.id, TaskStatus.PREPARING, Change(agent="agent-b"))
        flag.touch()
        wait_for(lambda: not agent.daemon.active_tasks(), what="agent-a's run to end", timeout=20)
    finally:
        agent.stop(force=True)
    now = agent_store.get(record.id)
    assert (now.status, now.agent, now.attempt) == (TaskStatus.PREPARING, "agent-b", 1)


def test_outside_its_windows_the_agent_takes_nothing(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    from datetime import datetime

    from overnight.agent.service.windows import FakeClock

    clock = FakeClock(datetime(2024, 5, 1, 12, 0))  # a Wednesday noon
    weekend = with_fields(config, uptime=("fri 19:00-mon 07:00",))
    record = enqueue(agent_store, project)
    daemon = make_daemon(weekend, clock=clock)
    assert daemon.info().state == "paused"
    assert daemon.info().extra["windows"]["state"] == "closed until fri 19:00"
    daemon.run(burst=True)
    assert agent_store.get(record.id).status is TaskStatus.QUEUED
    clock.set(datetime(2024, 5, 4, 12, 0))  # Saturday
    make_daemon(weekend, clock=clock).run(burst=True)
    assert agent_store.get(record.id).status is TaskStatus.FINISHED


def test_a_redis_that_comes_back_empty_costs_nothing_but_the_lost_record(
    agent_store: TaskStore, project: Repo, config: AgentConfig
) -> None:
    running = enqueue(agent_store, project, "--ticks", "5")
    agent = Background(make_daemon(config))
    try:
        wait_for(lambda: "tick 1" in log_text(agent_store, running.id), what="the task to tick")
        agent_store.redis.flushdb()  # as a Redis restarted without its data
        wait_for(lambda: not agent.daemon.active_tasks(), what="the task to end")
        later = enqueue(agent_store, project)
        done = wait_status(agent_store, later.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        assert agent.thread.is_alive()
        wait_for(
            lambda: "agent-a" in {w.name for w in Worker.all(connection=agent_store.redis)},
            what="the agent to register with RQ again",
        )
    finally:
        agent.stop()
    assert done.status is TaskStatus.FINISHED, done.error
