from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from overnight.errors import AgentError
from overnight.queue.jobs import ENTRY_POINT, is_overnight_job, task_id_of
from overnight.queue.records import Phase, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.cli import subprocess_env
from tests.fixtures.hostile import canary_module, listener, stale_started_job
from tests.fixtures.tasks import make_snapshot

WORKER = """
import sys
import redis
from rq.serializers import JSONSerializer
from rq.worker import Worker
from overnight.queue.taskworker import TaskWorker

url, kind = sys.argv[1], sys.argv[2]
cls = TaskWorker if kind == "overnight" else Worker
conn = redis.Redis.from_url(url)
cls(["default"], connection=conn, serializer=JSONSerializer).work(burst=True)
"""


def _burst(redis_url: str, kind: str = "overnight", *, importable: Path | None = None) -> None:
    """A real RQ worker process in burst mode (it forks a work horse per job it runs); modules in
    ``importable`` can be imported there."""
    env = subprocess_env()
    if importable is not None:
        env["PYTHONPATH"] = os.pathsep.join((env["PYTHONPATH"], str(importable)))
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, redis_url, kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr


def _foreign(redis_client: redis.Redis, marker: Path, job_id: str | None = None) -> Job:
    queue = Queue("default", connection=redis_client, serializer=JSONSerializer)
    return queue.enqueue_call("os.system", args=(f"touch {marker}",), job_id=job_id)


def test_a_plain_worker_would_run_it(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """The control: the job pushed below really runs on an ordinary RQ worker."""
    marker = tmp_path / "ran"
    _foreign(redis_client, marker)
    _burst(redis_url, kind="plain")
    assert marker.exists()


def test_task_worker_refuses_foreign_functions(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    json_job = _foreign(redis_client, marker)
    pickled = Queue("default", connection=redis_client).enqueue_call(
        "os.system", args=(f"touch {marker}",)
    )
    _burst(redis_url)
    assert not marker.exists()
    queue = Queue("default", connection=redis_client, serializer=JSONSerializer)
    for job in (json_job, pickled):
        assert job.get_status(refresh=True) is JobStatus.FAILED
        assert job.id in queue.failed_job_registry.get_job_ids()
    assert queue.count == 0
    assert redis_client.llen(queue.intermediate_queue_key) == 0


@pytest.mark.slow
def test_task_worker_refuses_without_sending_the_jobs_webhooks(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    with listener() as (url, requests):
        Queue("default", connection=redis_client, serializer=JSONSerializer).enqueue_call(
            "os.system",
            args=(f"touch {tmp_path / 'ran'}",),
            webhooks=[Webhook(url, "failed", method="POST")],
        )
        _burst(redis_url)
        assert requests == []
    assert not (tmp_path / "ran").exists()


def test_task_worker_cleans_a_stale_job_without_importing_its_callback(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, canary = canary_module(tmp_path, monkeypatch)
    job = stale_started_job(redis_client, "default", f"{module}.on_failure")
    started = StartedJobRegistry("default", connection=redis_client)
    _burst(redis_url, importable=tmp_path / "importable")
    assert not canary.exists()
    assert redis_client.zcard(started.key) == 0
    assert job.get_status(refresh=True) is JobStatus.FAILED


def test_refusal_is_recorded_on_the_task(
    store: TaskStore, redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """A foreign job hash written over an overnight task's job: refused, and the task failed."""
    marker = tmp_path / "ran"
    record = submit(store, make_snapshot(), TaskOptions())
    redis_client.delete(Queue("default", connection=redis_client).key)
    _foreign(redis_client, marker, job_id=record.id)
    _burst(redis_url)
    assert not marker.exists()
    failed = store.get(record.id)
    assert failed.status is TaskStatus.FAILED and failed.phase is Phase.AGENT
    assert "refused" in (failed.error or "") and "'os.system'" in (failed.error or "")


@pytest.mark.slow
def test_overnight_jobs_fail_on_a_worker_that_is_not_the_daemon(
    store: TaskStore, redis_url: str
) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    _burst(redis_url)
    failed = store.get(record.id)
    assert failed.status is TaskStatus.FAILED
    assert "overnight agent daemon" in (failed.error or "")


def test_is_overnight_job(store: TaskStore, redis_client: redis.Redis, tmp_path: Path) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    job = Job.fetch(record.id, connection=redis_client, serializer=JSONSerializer)
    assert is_overnight_job(job) and task_id_of(job) == record.id
    foreign = _foreign(redis_client, tmp_path / "x")
    assert not is_overnight_job(foreign)
    with pytest.raises(AgentError, match=r"os\.system"):
        task_id_of(foreign)
    other_args = Queue("default", connection=redis_client, serializer=JSONSerializer).enqueue_call(
        ENTRY_POINT, args=("someone-else",)
    )
    assert not is_overnight_job(other_args)  # the argument must be the job's own id
