"""RQ's view of overnight's tasks: one RQ job per task, kept in step with the task record.

Overnight's record is the truth; the RQ job exists so that RQ workers can take tasks from RQ
queues and RQ's tools (``rq info``) show queues, registries and workers correctly. Every status
change of a task is mirrored onto its job here, in the same Redis transaction.

RQ defaults that are wrong for multi-day runs are overridden: JSON instead of pickle, no job
timeout (overnight enforces the task's own), and job hashes and registry entries that never
expire (``overnight gc`` removes them with the task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import redis
from redis.client import Pipeline
from rq.job import Job, JobStatus
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
from rq.utils import now, utcformat

from overnight.queue import replies
from overnight.queue.records import ACTIVE_STATUSES, TaskStatus

ENTRY_POINT = "overnight.queue.jobs.run_task"
"""The only function an overnight RQ job may name (:mod:`overnight.queue.jobs`)."""

NO_TIMEOUT = -1
"""RQ's "never": no job timeout, no expiry of finished and failed jobs."""

EXECUTION = "overnight"
"""Execution id of the StartedJobRegistry entry overnight writes for a preparing/running task."""

_RQ_STATUS = {
    TaskStatus.QUEUED: JobStatus.QUEUED,
    TaskStatus.WAITING: JobStatus.DEFERRED,
    TaskStatus.PREPARING: JobStatus.STARTED,
    TaskStatus.RUNNING: JobStatus.STARTED,
    TaskStatus.FINISHED: JobStatus.FINISHED,
    TaskStatus.FAILED: JobStatus.FAILED,
    TaskStatus.LOST: JobStatus.FAILED,
    TaskStatus.CANCELED: JobStatus.CANCELED,
}


@dataclasses.dataclass(frozen=True)
class JobState:
    """What the mirror must read (under WATCH) before it can write a transition."""

    exists: bool
    started_entries: tuple[bytes, ...]  # this job's entries in the StartedJobRegistry


class RQMirror:
    """Creates and updates the RQ job of each task."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        """The RQ queue named as the user names it (``gpu`` is ``rq:queue:gpu``)."""
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self._redis, serializer=JSONSerializer)
        return self._queues[name]

    def new_job(self, task_id: str, queue: str, *, after: Sequence[str] = ()) -> Job:
        """A job for the task, not yet saved: deferred when it waits for others, else queued."""
        return Job.create(
            ENTRY_POINT,
            args=[task_id],
            id=task_id,
            connection=self._redis,
            serializer=JSONSerializer,
            timeout=NO_TIMEOUT,
            result_ttl=NO_TIMEOUT,
            failure_ttl=NO_TIMEOUT,
            origin=queue,
            description=f"overnight task {task_id}",
            depends_on=list(after) or None,
            status=JobStatus.DEFERRED if after else JobStatus.QUEUED,
        )

    def push_new(self, pipe: Pipeline, job: Job, *, at_front: bool = False) -> None:
        """Queue, on a transaction in MULTI mode, what RQ's enqueue writes: the job hash, the queue
        in ``rq:queues``, and the push (or, for a deferred job, its dependency registration)."""
        queue = self.queue(job.origin)
        pipe.sadd(Queue.redis_queues_keys, queue.key)
        deferred = job.get_status(refresh=False) is JobStatus.DEFERRED
        if not deferred:
            job.enqueued_at = now()
        mapping = job.to_dict()
        # RQ zlib-compresses the call, which makes these ~60 bytes 69. RQ reads plain data too
        # (Job.restore falls back), and with every value under 64 bytes Redis keeps the hash in
        # its compact listpack encoding: about 0.4 KB per job instead of 1.6 KB.
        mapping["data"] = job.data
        pipe.hset(job.key, mapping=mapping)
        if deferred:
            job.register_dependency(pipeline=pipe)
        else:
            (pipe.lpush if at_front else pipe.rpush)(queue.key, job.id)

    def read_state(self, pipe: Pipeline, task_id: str, queue: str) -> JobState:
        """Read, on a pipeline in WATCH mode, what :meth:`apply` needs; watches the job hash."""
        job_key = Job.key_for(task_id)
        replies.watch(pipe, job_key)
        exists = bool(pipe.exists(job_key))
        started_key = self._started(queue).key
        prefix = f"{task_id}:".encode()
        members = [replies.raw(e) or b"" for e in pipe.zrange(started_key, 0, -1)]
        entries = tuple(e for e in members if e.startswith(prefix))
        return JobState(exists=exists, started_entries=entries)

    def apply(
        self,
        pipe: Pipeline,
        state: JobState,
        task_id: str,
        queue_name: str,
        status: TaskStatus,
        *,
        after: Sequence[str] = (),
        agent: str | None = None,
        at_front: bool = False,
    ) -> None:
        """Queue, on a transaction in MULTI mode, the RQ side of a status change."""
        queue = self.queue(queue_name)
        if not state.exists:
            if status is TaskStatus.QUEUED:
                self.push_new(pipe, self.new_job(task_id, queue_name), at_front=at_front)
            return  # a job hash that is gone stays gone: writing parts of one would break RQ
        job_key = Job.key_for(task_id)
        stamp = utcformat(now())
        mapping: dict[Any, Any] = {"status": _RQ_STATUS[status].value}
        if state.started_entries:
            pipe.zrem(self._started(queue_name).key, *state.started_entries)
        pipe.lrem(queue.key, 0, task_id)
        pipe.lrem(queue.intermediate_queue_key, 0, task_id)
        pipe.zrem(DeferredJobRegistry(queue_name, connection=self._redis).key, task_id)
        for dependency in after:
            pipe.srem(Job.dependents_key_for(dependency), task_id)
        for registry in (FinishedJobRegistry, FailedJobRegistry, CanceledJobRegistry):
            pipe.zrem(registry(queue_name, connection=self._redis).key, task_id)

        if status is TaskStatus.QUEUED:
            mapping.update(enqueued_at=stamp, started_at="", ended_at="", worker_name="")
            (pipe.lpush if at_front else pipe.rpush)(queue.key, task_id)
        elif status in ACTIVE_STATUSES:
            mapping.update(started_at=stamp, last_heartbeat=stamp, worker_name=agent or "")
            pipe.zadd(self._started(queue_name).key, {f"{task_id}:{EXECUTION}": "+inf"})
        elif status is TaskStatus.FINISHED:
            mapping["ended_at"] = stamp
            pipe.zadd(
                FinishedJobRegistry(queue_name, connection=self._redis).key, {task_id: "+inf"}
            )
        elif status in (TaskStatus.FAILED, TaskStatus.LOST):
            mapping["ended_at"] = stamp
            pipe.zadd(FailedJobRegistry(queue_name, connection=self._redis).key, {task_id: "+inf"})
        elif status is TaskStatus.CANCELED:
            mapping["ended_at"] = stamp
            pipe.zadd(
                CanceledJobRegistry(queue_name, connection=self._redis).key, {task_id: "+inf"}
            )
        pipe.hset(job_key, mapping=mapping)

    def delete(self, pipe: Pipeline, task_id: str, queue_name: str) -> None:
        """Queue the removal of a task's job from RQ: its hash, queue entries and registries."""
        queue = self.queue(queue_name)
        pipe.lrem(queue.key, 0, task_id)
        for registry in (
            FinishedJobRegistry,
            FailedJobRegistry,
            CanceledJobRegistry,
            DeferredJobRegistry,
        ):
            pipe.zrem(registry(queue_name, connection=self._redis).key, task_id)
        pipe.zrem(self._started(queue_name).key, f"{task_id}:{EXECUTION}")
        job = Job(task_id, connection=self._redis)
        pipe.delete(
            job.key,
            job.dependents_key,
            job.dependencies_key,
            Result.get_key(task_id),  # type: ignore[no-untyped-call]
            job.execution_registry.key,
        )

    def _started(self, queue_name: str) -> StartedJobRegistry:
        return StartedJobRegistry(queue_name, connection=self._redis)
