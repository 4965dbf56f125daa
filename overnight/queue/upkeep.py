"""Overnight's upkeep of RQ's registries: what RQ's worker maintenance does, minus running
anything a job names.

RQ's ``Worker.clean_registries`` fails an abandoned job by importing and calling the failure
callback it names and by sending its webhooks, and fails a job stuck in an intermediate queue
through the worker's failure handling (webhooks again). Anyone who can write to Redis can write
such a job, so overnight's workers never call it. The mirror (:mod:`overnight.queue.rqsync`)
keeps overnight's own jobs in step with their tasks, with registry entries that never expire;
what is left to clean is what others wrote, or what a process that died left half-way:

- started registry: entries whose time is up (never the mirror's) go; a foreign job so left
  marked started fails, and so does a task still queued (a plain RQ worker took it and died);
- finished and failed registries: entries whose time is up go (foreign jobs, refusals);
- intermediate queue: a job an agent popped and died holding, seen there a minute apart, goes
  back to the front of its queue when its task is still queued; a foreign one is refused;
- worker registry: workers whose keys expired go (RQ's function for it touches no job).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker_registration import clean_worker_registry

from overnight.errors import OvernightError
from overnight.queue import replies
from overnight.queue.jobs import (
    fail_in_rq,
    is_overnight_job,
    record_refusal,
    refusal_message,
    task_id_of,
)
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)


def clean(connection: redis.Redis, queues: Iterable[str], *, worker_name: str) -> None:
    """Clean the registries of ``queues``; a queue another worker cleans now is left alone."""
    store = TaskStore(connection)
    for name in queues:
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        if not queue.acquire_maintenance_lock():
            continue
        try:
            log.debug("cleaning the registries of queue %s", name)
            _clean_started(queue, store, worker_name)
            cutoff = time.time()
            for registry in (FinishedJobRegistry, FailedJobRegistry):
                connection.zremrangebyscore(registry(name, connection=connection).key, 0, cutoff)
            _clean_intermediate(queue, store, worker_name)
            clean_worker_registry(queue)
        finally:
            queue.release_maintenance_lock()  # type: ignore[no-untyped-call]


def _clean_started(queue: Queue, store: TaskStore, worker_name: str) -> None:
    connection = queue.connection
    registry = StartedJobRegistry(queue.name, connection=connection)
    for entry in replies.texts(connection.zrangebyscore(registry.key, 0, time.time())):
        connection.zrem(registry.key, entry)
        job_id = registry.parse_job_id(entry)
        job = _fetch(connection, job_id)
        if job is None or job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        if not is_overnight_job(job):
            reason = (
                f"abandoned: RQ job {job_id} was started by a worker that went away; "
                "overnight failed it without running its callbacks or webhooks"
            )
            log.warning("%s", reason)
            fail_in_rq(connection, job_id, queue.name, reason, worker_name=worker_name)
            continue
        record = _record(store, task_id_of(job))
        if record is None:
            reason = f"abandoned: RQ job {job_id} names no stored task, and its worker went away"
            fail_in_rq(connection, job_id, queue.name, reason, worker_name=worker_name)
        elif record.status in (TaskStatus.QUEUED, TaskStatus.WAITING):
            record_refusal(  # the mirror fails the job with the task
                job,
                f"task {job_id} was taken by a plain RQ worker that went away; overnight "
                "tasks run only in `overnight agent daemon`: stop that worker and retry the task",
            )
        # Preparing or running: its heartbeat and the reaper decide. Ended: the record says so.


def _clean_intermediate(queue: Queue, store: TaskStore, worker_name: str) -> None:
    connection = queue.connection
    stuck = queue.intermediate_queue
    started = StartedJobRegistry(queue.name, connection=connection)
    for job_id in stuck.get_job_ids():
        if job_id in started.get_job_ids(cleanup=False):
            continue  # a plain RQ worker runs it
        job = _fetch(connection, job_id)
        if job is None:
            stuck.remove(job_id)
            continue
        if stuck.set_first_seen(job_id) or not stuck.should_be_cleaned_up(job_id):
            continue
        if not is_overnight_job(job):
            message = refusal_message(job)
            log.warning("%s", message)
            record_refusal(job, message)
            fail_in_rq(connection, job_id, queue.name, message, worker_name=worker_name)
            stuck.remove(job_id)
        else:
            record = _record(store, task_id_of(job))
            with connection.pipeline() as pipe:
                pipe.lrem(stuck.key, 1, job_id)
                if record is not None and record.status is TaskStatus.QUEUED:
                    log.info("task %s was popped by an agent that went away; queued again", job_id)
                    pipe.lpush(queue.key, job_id)
                pipe.execute()
        connection.delete(stuck.get_first_seen_key(job_id))


def _fetch(connection: redis.Redis, job_id: str) -> Job | None:
    """The job, read without importing anything it names; None when gone or unreadable."""
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except Exception:  # NoSuchJobError, or a hash a hostile writer made unreadable
        return None


def _record(store: TaskStore, task_id: str) -> TaskRecord | None:
    with contextlib.suppress(OvernightError):  # no such task, or a corrupt record
        return store.get(task_id)
    return None
