"""Registry upkeep by a real agent: stale entries go, nothing a job names is imported or sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    make_daemon,
    wait_for,
    wait_status,
)
from tests.fixtures.gitrepo import Repo
from tests.fixtures.hostile import canary_module, listener, stale_started_job


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.slow
def test_a_stale_started_job_is_failed_without_importing_its_callback(
    conn: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module, canary = canary_module(tmp_path, monkeypatch)
    started = StartedJobRegistry("q", connection=conn)
    with listener() as (url, requests):
        hook = Webhook(url, "failed", method="POST")
        job = stale_started_job(conn, "q", f"{module}.on_failure", [hook])
        agent = Background(make_daemon(agent_config(redis_url, tmp_path / "agent", venv_cache)))
        try:
            wait_for(lambda: conn.zcard(started.key) == 0, what="the stale entry to be cleaned")
        finally:
            agent.stop()
        assert requests == []
    assert not canary.exists()
    assert Job.fetch(job.id, connection=conn).get_status() is JobStatus.FAILED
    assert job.id in Queue("q", connection=conn).failed_job_registry.get_job_ids()


@pytest.mark.slow
def test_a_task_an_agent_popped_and_died_holding_runs_after_all(
    conn: redis.Redis,
    agent_store: TaskStore,
    project: Repo,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
) -> None:
    record = enqueue(agent_store, project)
    queue = Queue("q", connection=conn, serializer=JSONSerializer)
    # What a pop (BLMOVE to the intermediate queue) leaves when its agent dies at once after.
    conn.lmove(queue.key, queue.intermediate_queue_key)
    stuck = queue.intermediate_queue
    conn.set(stuck.get_first_seen_key(record.id), time.time() - 120)  # seen two minutes ago
    agent = Background(make_daemon(agent_config(redis_url, tmp_path / "agent", venv_cache)))
    try:
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
    finally:
        agent.stop()
    assert done.status is TaskStatus.FINISHED
    assert conn.llen(queue.intermediate_queue_key) == 0
