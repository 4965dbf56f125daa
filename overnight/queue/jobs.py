"""The one function an overnight RQ job may name, and a worker that refuses every other job.

An RQ job names a function that the worker imports and calls. Anyone who can write to Redis can
push a job naming ``os.system``; an overnight worker must never run it. Every overnight job
names :data:`ENTRY_POINT` with the task id as its only argument, and :class:`TaskWorker` (and the
agent daemon built on this module) checks that before anything else, recording any other job as
failed instead of running it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from typing import Any

import redis
from rq.job import Job, JobStatus, get_current_job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat
from rq.worker import Worker

from overnight.errors import AgentError, OvernightError
from overnight.queue.records import Phase, TaskStatus
from overnight.queue.rqsync import ENTRY_POINT

REFUSED_TTL = 7 * 24 * 3600
"""Seconds a refused job's hash, result and failed-registry entry are kept."""

log = logging.getLogger(__name__)


def run_task(task_id: str) -> None:
    """The job function RQ jobs name; tasks run only in ``overnight agent daemon``.

    The daemon takes a task's job from its RQ queue and runs the task itself, supervised; it never
    lets RQ call this function. A plain RQ worker that reaches here marks the task failed, naming
    itself, so the task does not sit ``queued`` forever, and raises.
    """
    job = get_current_job()
    worker = f" ({job.worker_name})" if job is not None and job.worker_name else ""
    message = (
        f"task {task_id} was taken by a plain RQ worker{worker}; overnight tasks run only in "
        "`overnight agent daemon`: stop that worker and retry the task"
    )
    if job is not None and job.id == task_id:
        record_refusal(job, message)
    raise AgentError(message)


def is_overnight_job(job: Job) -> bool:
    """Whether ``job`` names :data:`ENTRY_POINT` with a single task-id argument (and nothing else).

    A job whose data cannot be decoded as JSON (pickle, garbage) is not an overnight job.
    """
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except Exception:  # DeserializationError, or anything a hostile payload raises
        return False
    return (
        func_name == ENTRY_POINT
        and instance is None
        and not kwargs
        and isinstance(args, (list, tuple))
        and len(args) == 1
        and args[0] == job.id
    )


def task_id_of(job: Job) -> str:
    """The task an overnight job runs; raises :class:`AgentError` for any other job."""
    if not is_overnight_job(job):
        raise AgentError(f"RQ job {job.id} is not an overnight job ({describe(job)}); refusing it")
    return str(job.args[0])


def describe(job: Job) -> str:
    """What a job names, for error messages, without ever importing it."""
    try:
        return f"function {job.func_name!r}"
    except Exception:
        return "a payload that is not overnight's JSON"


def refusal_message(job: Job) -> str:
    return (
        f"refused: RQ job {job.id} names {describe(job)}; an overnight worker runs only "
        f"{ENTRY_POINT}. Something pushed a foreign job on this queue"
    )


def record_refusal(job: Job, message: str) -> None:
    """Mark the task record with the job's id failed, when one exists and is not final."""
    from overnight.queue.store import TaskStore  # the store imports this module

    store = TaskStore(job.connection)
    # No such task, a corrupt record, or a task already past queued: nothing to mark.
    with contextlib.suppress(OvernightError):
        store.transition(
            job.id,
            TaskStatus.FAILED,
            note=message,
            expect={TaskStatus.QUEUED, TaskStatus.WAITING},
            phase=Phase.AGENT,
            error=message,
        )


def fail_in_rq(
    connection: redis.Redis, job_id: str, queue: str, reason: str, *, worker_name: str = ""
) -> None:
    """Record the RQ job ``job_id`` of ``queue`` as failed with ``reason``, and nothing more.

    RQ's own failure handling (``Worker.handle_job_failure``) does what the job asks for: it
    retries it, sends its webhooks (HTTP requests to any address, with any headers) and enqueues
    its dependents. A job overnight refuses gets none of that: its status, the reason, its end
    time, a failure result and an entry in the queue's FailedJobRegistry are written with plain
    Redis commands, and all of them expire after :data:`REFUSED_TTL`.
    """
    stamp = utcformat(now())
    key = Job.key_for(job_id)
    job = Job(job_id, connection=connection, serializer=JSONSerializer)
    failed = FailedJobRegistry(queue, connection=connection)
    with connection.pipeline() as pipe:
        pipe.hset(
            key,
            mapping={
                "status": JobStatus.FAILED.value,
                "exc_info": zlib.compress(reason.encode()),
                "ended_at": stamp,
                "worker_name": worker_name,
            },
        )
        pipe.hsetnx(key, "started_at", stamp)
        pipe.expire(key, REFUSED_TTL)
        Result.create_failure(job, REFUSED_TTL, reason, worker_name=worker_name, pipeline=pipe)
        pipe.zadd(failed.key, {job_id: time.time() + REFUSED_TTL})
        pipe.execute()


class TaskWorker(Worker):
    """An RQ worker that runs nothing but overnight jobs; any other job is recorded as failed.

    The check happens in the worker process before any fork, so a refused job's function is never
    imported. Serializes as JSON by default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(*args, **kwargs)

    def execute_job(self, job: Job, queue: Queue) -> None:
        if is_overnight_job(job):
            super().execute_job(job, queue)
        else:
            self.refuse(job, queue)

    def refuse(self, job: Job, queue: Queue) -> None:
        """Record ``job`` as failed in RQ (and on its task record) without running it."""
        message = refusal_message(job)
        log.warning("%s", message)
        record_refusal(job, message)
        queue.intermediate_queue.remove(job.id)
        fail_in_rq(self.connection, str(job.id), queue.name, message, worker_name=self.name)
        with self.connection.pipeline() as pipe:
            self.increment_failed_job_count(pipe)
            pipe.execute()

    def clean_registries(self) -> None:
        """Overnight's registry upkeep instead of RQ's, which runs what stale jobs name."""
        from overnight.queue.upkeep import clean  # upkeep reads task records: the store

        clean(self.connection, [q.name for q in self.queues], worker_name=self.name)
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ types it None
