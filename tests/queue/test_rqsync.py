from __future__ import annotations

import subprocess
import sys
from typing import Any, cast

import pytest
import redis
from rq.job import Dependency, Job, JobStatus
from rq.queue import Queue
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import WorkerStatus

from overnight.queue import rqsync
from overnight.queue.cancel import request_cancel
from overnight.queue.jobs import ENTRY_POINT
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.rqsync import NO_TIMEOUT, RQMirror
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from overnight.queue.taskworker import TaskWorker
from tests.fixtures.tasks import make_snapshot


def _job(redis_client: redis.Redis, task_id: str) -> Job:
    return Job.fetch(task_id, connection=redis_client, serializer=JSONSerializer)


def test_job_names_the_entry_point_with_json_and_no_expiry(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
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
    a, b, c = (submit(store, make_snapshot(), TaskOptions(queue="gpu")) for _ in range(3))
    store.transition(a.id, TaskStatus.PREPARING, Change(agent="box"))
    assert _job(redis_client, a.id).get_status() is JobStatus.STARTED
    assert a.id not in queue.job_ids
    assert queue.started_job_registry.get_job_ids() == [a.id]
    store.transition(a.id, TaskStatus.RUNNING)
    assert queue.started_job_registry.count == 1
    store.transition(a.id, TaskStatus.FINISHED, Change(exit_code=0))
    assert _job(redis_client, a.id).get_status() is JobStatus.FINISHED
    assert queue.started_job_registry.count == 0
    assert queue.finished_job_registry.get_job_ids() == [a.id]

    store.transition(b.id, TaskStatus.RUNNING, Change(agent="box"))
    store.transition(b.id, TaskStatus.FAILED, Change(exit_code=1, error="exit code 1"))
    job = _job(redis_client, b.id)
    assert job.get_status() is JobStatus.FAILED
    assert queue.failed_job_registry.get_job_ids() == [b.id]

    request_cancel(store, c.id)
    assert _job(redis_client, c.id).get_status() is JobStatus.CANCELED
    assert queue.job_ids == []
    assert queue.canceled_job_registry.get_job_ids() == [c.id]


def test_rq_info_shows_overnight_queues_and_counts(
    store: TaskStore, redis_client: redis.Redis, redis_url: str
) -> None:
    done = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    submit(store, make_snapshot(), TaskOptions(queue="cpu"))
    store.transition(done.id, TaskStatus.RUNNING, Change(agent="box"))
    store.transition(done.id, TaskStatus.FINISHED, Change(exit_code=0))
    running = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    store.transition(running.id, TaskStatus.RUNNING, Change(agent="box"))
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


def test_the_keys_written_without_rq_are_rqs_own(redis_client: redis.Redis) -> None:
    queue = Queue("gpu", connection=redis_client)
    job = Job("t1", connection=redis_client)
    assert (rqsync.QUEUES_KEY, rqsync.queue_key("gpu")) == (Queue.redis_queues_keys, queue.key)
    assert f"{rqsync.queue_key('gpu')}:intermediate" == queue.intermediate_queue_key
    registries = {
        "wip": StartedJobRegistry,
        "finished": FinishedJobRegistry,
        "failed": FailedJobRegistry,
        "canceled": CanceledJobRegistry,
        "deferred": DeferredJobRegistry,
    }
    for kind, registry in registries.items():
        assert rqsync.registry_key(kind, "gpu") == registry("gpu", connection=redis_client).key
    assert (rqsync.job_key("t1"), rqsync.dependents_key("t1")) == (job.key, job.dependents_key)
    assert rqsync._dependencies_key("t1") == job.dependencies_key
    assert f"rq:results:{job.id}" == Result.get_key(job.id)  # type: ignore[no-untyped-call]
    assert f"rq:executions:{job.id}" == job.execution_registry.key


def _contents(client: redis.Redis) -> dict[bytes, Any]:
    """Every key and what it holds, RQ's timestamps (which differ run to run) left out."""
    found: dict[bytes, Any] = {}
    every = cast(list[bytes], client.keys("*"))
    for key in every:
        kind = client.type(key)
        if kind == b"hash":
            fields = cast(dict[bytes, bytes], client.hgetall(key))
            found[key] = {k: v for k, v in fields.items() if not k.endswith(b"_at")}
            found[key][b"stamped"] = sorted(k for k in fields if k.endswith(b"_at") and fields[k])
        elif kind == b"list":
            found[key] = client.lrange(key, 0, -1)
        elif kind == b"set":
            found[key] = client.smembers(key)
        else:
            ranked = cast(list[tuple[bytes, float]], client.zrange(key, 0, -1, withscores=True))
            found[key] = [member for member, _score in ranked]
    return found


def _enqueued_by_rq(client: redis.Redis, task_id: str, after: list[str]) -> None:
    """What overnight wrote for a new job when it built it with RQ's own classes."""
    job = Job.create(
        ENTRY_POINT, args=[task_id], id=task_id, connection=client, serializer=JSONSerializer,
        timeout=NO_TIMEOUT, result_ttl=NO_TIMEOUT, failure_ttl=NO_TIMEOUT, origin="gpu",
        description=f"overnight task {task_id}", depends_on=list[Dependency | Job | str](after) or None,
        status=JobStatus.DEFERRED if after else JobStatus.QUEUED,
    )  # fmt: skip
    queue = Queue("gpu", connection=client, serializer=JSONSerializer)
    with client.pipeline() as pipe:
        pipe.sadd(Queue.redis_queues_keys, queue.key)
        if not after:
            job.enqueued_at = now()
        mapping = job.to_dict()
        mapping["data"] = job.data  # overnight keeps the call uncompressed
        pipe.hset(job.key, mapping=mapping)
        if after:
            job.register_dependency(pipeline=pipe)
        else:
            pipe.rpush(queue.key, job.id)
        pipe.execute()


@pytest.mark.parametrize("after", [[], ["first", "second"]])
def test_a_new_job_is_written_as_rq_writes_it(redis_client: redis.Redis, after: list[str]) -> None:
    _enqueued_by_rq(redis_client, "t1", after)
    expected = _contents(redis_client)
    redis_client.flushdb()
    with redis_client.pipeline() as pipe:
        mirror = RQMirror(redis_client)
        mirror.push_new(pipe, mirror.new_job("t1", "gpu", after=after))
        pipe.execute()
    assert _contents(redis_client) == expected
    job = Job.fetch("t1", connection=redis_client, serializer=JSONSerializer)
    assert (job.func_name, job.args, sorted(job.dependency_ids)) == (ENTRY_POINT, ["t1"], after)
    assert job.get_status() is (JobStatus.DEFERRED if after else JobStatus.QUEUED)
