from __future__ import annotations

import subprocess
import sys

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from overnight.queue.jobs import ENTRY_POINT, TaskWorker
from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.rqsync import NO_TIMEOUT
from overnight.queue.store import TaskStore
from tests.fixtures.tasks import make_snapshot


def _job(redis_client: redis.Redis, task_id: str) -> Job:
    return Job.fetch(task_id, connection=redis_client, serializer=JSONSerializer)


def test_job_names_the_entry_point_with_json_and_no_expiry(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = store.submit(make_snapshot(), TaskOptions(queue="gpu"))
    job = _job(redis_client, record.id)
    assert job.id == record.id
    assert job.func_name == ENTRY_POINT and job.args == [record.id]
    assert job.timeout == NO_TIMEOUT and job.result_ttl == NO_TIMEOUT
    assert job.failure_ttl == NO_TIMEOUT
    assert job.get_status() is JobStatus.QUEUED
    assert redis_client.ttl(job.key) == -1
    queue = Queue("gpu", connection=redis_client, serializer=JSONSerializer)
    assert queue.job_ids == [record.id]


def test_status_changes_reach_rq_registries(store: TaskStore, redis_client: redis.Redis) -> None:
    queue = Queue("gpu", connection=redis_client, serializer=JSONSerializer)
    a, b, c = (store.submit(make_snapshot(), TaskOptions(queue="gpu")) for _ in range(3))
    store.transition(a.id, TaskStatus.PREPARING, agent="box")
    assert _job(redis_client, a.id).get_status() is JobStatus.STARTED
    assert a.id not in queue.job_ids
    assert queue.started_job_registry.get_job_ids() == [a.id]
    store.transition(a.id, TaskStatus.RUNNING)
    assert queue.started_job_registry.count == 1
    store.transition(a.id, TaskStatus.FINISHED, exit_code=0)
    assert _job(redis_client, a.id).get_status() is JobStatus.FINISHED
    assert queue.started_job_registry.count == 0
    assert queue.finished_job_registry.get_job_ids() == [a.id]

    store.transition(b.id, TaskStatus.RUNNING, agent="box")
    store.transition(b.id, TaskStatus.FAILED, exit_code=1, error="exit code 1")
    job = _job(redis_client, b.id)
    assert job.get_status() is JobStatus.FAILED
    assert queue.failed_job_registry.get_job_ids() == [b.id]

    store.request_cancel(c.id)
    assert _job(redis_client, c.id).get_status() is JobStatus.CANCELED
    assert queue.job_ids == []
    assert queue.canceled_job_registry.get_job_ids() == [c.id]


def test_rq_info_shows_overnight_queues_and_counts(
    store: TaskStore, redis_client: redis.Redis, redis_url: str
) -> None:
    done = store.submit(make_snapshot(), TaskOptions(queue="gpu"))
    store.submit(make_snapshot(), TaskOptions(queue="gpu"))
    store.submit(make_snapshot(), TaskOptions(queue="cpu"))
    store.transition(done.id, TaskStatus.RUNNING, agent="box")
    store.transition(done.id, TaskStatus.FINISHED, exit_code=0)
    running = store.submit(make_snapshot(), TaskOptions(queue="gpu"))
    store.transition(running.id, TaskStatus.RUNNING, agent="box")
    store.heartbeat(running.id, "box")
    worker = TaskWorker(["gpu", "cpu"], connection=redis_client, name="box")
    worker.register_birth()  # type: ignore[no-untyped-call]
    worker.set_state(WorkerStatus.BUSY)
    proc = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "-u", redis_url, "--raw"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "queue gpu 1, 1 executing, 1 finished, 0 failed" in lines
    assert "queue cpu 1, 0 executing, 0 finished, 0 failed" in lines
    assert any(line.startswith("worker box (") and "busy gpu, cpu" in line for line in lines)
    worker.register_death()  # type: ignore[no-untyped-call]
    # rq info cleans registries; overnight's entries survive it.
    assert store.get(running.id).status is TaskStatus.RUNNING
    queue = Queue("gpu", connection=redis_client, serializer=JSONSerializer)
    assert queue.started_job_registry.get_job_ids() == [running.id]
