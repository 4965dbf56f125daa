from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from rq.queue import Queue
from rq.serializers import JSONSerializer

from overnight.agent.service.windows import FakeClock
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    log_text,
    make_daemon,
    process_gone,
    wait_for,
    wait_status,
)
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import cli_output, wait_output

pytestmark = pytest.mark.slow

SATURDAY_NOON = datetime(2024, 1, 6, 12, 0)  # January 2024: the 6th is a Saturday
WINDOW = ("sat 09:00-13:00",)  # at noon it closes in 1h


def _queue(store: TaskStore) -> list[str]:
    return Queue("q", connection=store.redis, serializer=JSONSerializer).job_ids


def test_agent_takes_the_next_task_that_fits_and_says_why_the_other_waits(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    clock = FakeClock(SATURDAY_NOON)
    long = enqueue(agent_store, project, expect=3 * 3600.0)
    short = enqueue(agent_store, project, "--sleep", "0.1", expect=600.0)
    config = agent_config(redis_url, tmp_path / "agent", venv_cache, uptime=WINDOW)
    agent = Background(make_daemon(config, clock=clock))
    try:
        wait_status(agent_store, short.id, TaskStatus.FINISHED)
        assert agent_store.get(long.id).status is TaskStatus.QUEUED
        assert _queue(agent_store) == [long.id]  # left in place, at the head
        why = "expected 3h00m (--expect), window closes in"
        workers = wait_output(redis_url, why, "workers")
        assert f"{long.id} waits" in workers
        assert f"waits:        agent agent-a: {why}" in cli_output(redis_url, "show", long.id)
        clock.set(datetime(2024, 1, 13, 9, 0))  # next Saturday 09:00: 4h left, it fits
        wait_status(agent_store, long.id, TaskStatus.FINISHED)
        assert "waits:" not in cli_output(redis_url, "show", long.id)
    finally:
        agent.stop()


def test_task_of_unknown_length_is_taken_and_window_end_stop_requeues_it_at_the_front(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    clock = FakeClock(SATURDAY_NOON)
    running = enqueue(agent_store, project, "--sleep", "120")
    config = agent_config(
        redis_url, tmp_path / "agent", venv_cache, uptime=WINDOW, window_end="stop"
    )
    agent = Background(make_daemon(config, clock=clock))
    try:
        text = wait_for(
            lambda: (t := log_text(agent_store, running.id)) and "pid=" in t and t,
            what="the task to start",
        )
        pid = int(str(text).split("pid=", 1)[1].split()[0])
        later = enqueue(agent_store, project, expect=600.0)
        wait_for(lambda: _queue(agent_store) == [later.id], what="the later task in line")
        clock.set(datetime(2024, 1, 6, 13, 1))  # the window closed a minute ago
        record = wait_status(agent_store, running.id, TaskStatus.QUEUED, timeout=30)
        assert "agent agent-a's window closed (window_end: stop)" in record.history[-1].note
        assert "requeued at the front" in record.history[-1].note
        assert _queue(agent_store) == [running.id, later.id]
        assert process_gone(pid)
        assert "stopping this run" in log_text(agent_store, running.id)
        assert agent_store.get(later.id).status is TaskStatus.QUEUED
    finally:
        agent.stop(force=True)


def test_window_end_finish_lets_the_run_go_on(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    clock = FakeClock(SATURDAY_NOON)
    flag = tmp_path / "flag"
    running = enqueue(agent_store, project, "--wait-for", str(flag))
    config = agent_config(redis_url, tmp_path / "agent", venv_cache, uptime=WINDOW)
    agent = Background(make_daemon(config, clock=clock))
    try:
        wait_for(lambda: "pid=" in log_text(agent_store, running.id), what="the task to start")
        clock.set(datetime(2024, 1, 6, 13, 1))
        wait_output(redis_url, "paused", "workers")
        assert agent_store.get(running.id).status is TaskStatus.RUNNING
        flag.touch()
        wait_status(agent_store, running.id, TaskStatus.FINISHED)
    finally:
        flag.touch()
        agent.stop()
