"""RQ's view of overnight's tasks: one RQ job per task, kept in step with the task record.

Overnight's record is the truth; the RQ job exists so that RQ workers can take tasks from RQ
queues and RQ's tools (``rq info``) show queues, registries and workers correctly. Every status
change of a task is mirrored onto its job here, in the same Redis transaction.

RQ defaults that are wrong for multi-day runs are overridden: JSON instead of pickle, no job
timeout (overnight enforces the task's own), and job hashes and registry entries that never
expire (``overnight gc`` removes them with the task).

RQ itself is not imported here: the keys and the job hash are written as RQ 3 writes them
(tests/queue/test_rqsync.py checks them against RQ's own), so that ``overnight enqueue``, which
only writes them, does not spend some 30 ms importing RQ.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import json
from collections.abc import Sequence
from typing import Any

import redis
from redis.client import Pipeline

from overnight.queue import keys, replies
from overnight.queue.records import ACTIVE_STATUSES, TaskStatus

ENTRY_POINT = "overnight.queue.jobs.run_task"
"""The only function an overnight RQ job may name (:mod:`overnight.queue.jobs`)."""

NO_TIMEOUT = -1
"""RQ's "never": no job timeout, no expiry of finished and failed jobs."""

EXECUTION = "overnight"
"""Execution id of the StartedJobRegistry entry overnight writes for a preparing/running task."""

_RQ_STATUS = {
    TaskStatus.QUEUED: "queued",
    TaskStatus.WAITING: "deferred",
    TaskStatus.HELD: "deferred",  # in the deferred registry, off the queue: no worker takes it
    TaskStatus.PREPARING: "started",
    TaskStatus.RUNNING: "started",
    TaskStatus.FINISHED: "finished",
    TaskStatus.FAILED: "failed",
    TaskStatus.LOST: "failed",
    TaskStatus.CANCELED: "canceled",
}
"""The RQ job status (``rq.job.JobStatus``) of each task status."""

PLACE_DEPTH = 100
"""How many of the ids behind a held task its place remembers (:data:`_SAVE_PLACE`)."""

_SAVE_PLACE = """
redis.call('DEL', KEYS[2])
local pos = redis.call('LPOS', KEYS[1], ARGV[1])
local depth = tonumber(ARGV[2])
local behind
if pos then
  behind = redis.call('LRANGE', KEYS[1], pos + 1, pos + depth)
else
  behind = redis.call('LRANGE', KEYS[1], 0, depth - 1)
end
local marker = 's'
if not pos and #behind == 0 then marker = 'f' end
redis.call('RPUSH', KEYS[2], marker, unpack(behind))
return pos
"""
"""Where a task being held stands: the ids behind it (all of the queue when an agent has just
popped it from the head), after a marker (``f``: it was alone at the front)."""

_RESTORE_PLACE = """
local place = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
if #place == 0 then
  if ARGV[2] == '1' then redis.call('LPUSH', KEYS[1], ARGV[1])
  else redis.call('RPUSH', KEYS[1], ARGV[1]) end
  return -2
end
for i = 2, #place do
  if redis.call('LPOS', KEYS[1], place[i]) then
    redis.call('LINSERT', KEYS[1], 'BEFORE', place[i], ARGV[1])
    return i - 1
  end
end
if place[1] == 'f' or #place > 1 then redis.call('LPUSH', KEYS[1], ARGV[1])
else redis.call('RPUSH', KEYS[1], ARGV[1]) end
return -1
"""
"""A released task back where it stood: before the first of the ids that were behind it and are
still queued; at the front when all of them were taken (so were the ones ahead); at the back
when nothing was behind it, or no place was kept (it moved queue while held)."""

QUEUES_KEY = "rq:queues"
"""The set of RQ's queue keys (``Queue.redis_queues_keys``)."""


def queue_key(queue: str) -> str:
    """The list of an RQ queue's job ids (``Queue.key``)."""
    return f"rq:queue:{queue}"


def registry_key(kind: str, queue: str) -> str:
    """A queue's registry of jobs: ``wip`` (started), ``finished``, ``failed``, ``canceled``,
    ``deferred`` (RQ's ``*JobRegistry.key``)."""
    return f"rq:{kind}:{queue}"


def job_key(task_id: str) -> str:
    """The hash of a task's RQ job (``Job.key_for``)."""
    return f"rq:job:{task_id}"


def dependents_key(task_id: str) -> str:
    """The jobs waiting for this one (``Job.dependents_key_for``)."""
    return f"rq:job:{task_id}:dependents"


def _dependencies_key(task_id: str) -> str:
    return f"rq:job::{task_id}:dependencies"  # sic: RQ 3's Job.dependencies_key


def _timestamp() -> str:
    """Now, as RQ writes its times (``rq.utils.utcformat(now())``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A task's RQ job, not yet saved: deferred when it waits for others, else queued."""

    id: str
    origin: str  # the queue
    after: tuple[str, ...] = ()
    created_at: str = dataclasses.field(default_factory=_timestamp)

    @property
    def key(self) -> str:
        return job_key(self.id)

    def mapping(self) -> dict[Any, Any]:
        """The job hash as RQ's ``Job.create(...).to_dict()`` has it (``enqueued_at`` set as RQ's
        enqueue sets it), the call as plain JSON (see :meth:`RQMirror.push_new`)."""
        fields: dict[Any, Any] = {
            "created_at": self.created_at,
            "data": json.dumps([ENTRY_POINT, None, [self.id], {}]).encode(),
            "success_callback_name": "",
            "failure_callback_name": "",
            "stopped_callback_name": "",
            "started_at": "",
            "ended_at": "",
            "last_heartbeat": "",
            "worker_name": "",
            "group_id": "",
            "origin": self.origin,
            "description": f"overnight task {self.id}",
        }
        if not self.after:
            fields["enqueued_at"] = _timestamp()
        fields.update(timeout=NO_TIMEOUT, result_ttl=NO_TIMEOUT, failure_ttl=NO_TIMEOUT)
        fields["status"] = "deferred" if self.after else "queued"
        if self.after:
            fields["dependency_id"] = self.after[0]
            fields["dependency_ids"] = json.dumps(list(self.after))
        return fields


@dataclasses.dataclass(frozen=True)
class JobState:
    """What the mirror must read (under WATCH) before it can write a transition."""

    exists: bool
    started_entries: tuple[bytes, ...]  # this job's entries in the StartedJobRegistry


class RQMirror:
    """Creates and updates the RQ job of each task."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client

    def new_job(self, task_id: str, queue: str, *, after: Sequence[str] = ()) -> NewJob:
        """A job for the task, not yet saved: deferred when it waits for others, else queued."""
        return NewJob(task_id, queue, tuple(after))

    def push_new(self, pipe: Pipeline, job: NewJob, *, at_front: bool = False) -> None:
        """Queue, on a transaction in MULTI mode, what RQ's enqueue writes: the job hash, the queue
        in ``rq:queues``, and the push (or, for a deferred job, its dependency registration)."""
        pipe.sadd(QUEUES_KEY, queue_key(job.origin))
        # RQ zlib-compresses the call, which makes these ~60 bytes 69. RQ reads plain data too
        # (Job.restore falls back), and with every value under 64 bytes Redis keeps the hash in
        # its compact listpack encoding: about 0.4 KB per job instead of 1.6 KB.
        pipe.hset(job.key, mapping=job.mapping())
        if job.after:  # as RQ's Job.register_dependency, scored as its DeferredJobRegistry.add
            now = datetime.datetime.now(datetime.timezone.utc)
            pipe.zadd(
                registry_key("deferred", job.origin), {job.id: calendar.timegm(now.utctimetuple())}
            )
            for dependency in job.after:
                pipe.sadd(dependents_key(dependency), job.id)
                pipe.sadd(_dependencies_key(job.id), dependency)
        else:
            (pipe.lpush if at_front else pipe.rpush)(queue_key(job.origin), job.id)

    def read_state(self, pipe: Pipeline, task_id: str, queue: str) -> JobState:
        """Read, on a pipeline in WATCH mode, what :meth:`apply` needs; watches the job hash."""
        replies.watch(pipe, job_key(task_id))
        exists = bool(pipe.exists(job_key(task_id)))
        prefix = f"{task_id}:".encode()
        members = [replies.raw(e) or b"" for e in pipe.zrange(registry_key("wip", queue), 0, -1)]
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
        previous: TaskStatus | None = None,
        old_queue: str | None = None,
    ) -> None:
        """Queue, on a transaction in MULTI mode, the RQ side of a status change.

        ``previous`` is the task's status before it: a queued task becoming held keeps its place
        (:data:`_SAVE_PLACE`), a held one queued again gets it back. ``old_queue``, when it is
        not ``queue_name``, moves the job from that queue to this one.
        """
        if not state.exists:
            if status is TaskStatus.QUEUED:
                self.push_new(pipe, self.new_job(task_id, queue_name), at_front=at_front)
            return  # a job hash that is gone stays gone: writing parts of one would break RQ
        source = old_queue or queue_name
        queue = queue_key(queue_name)
        stamp = _timestamp()
        mapping: dict[Any, Any] = {"status": _RQ_STATUS[status]}
        if source != queue_name:
            mapping["origin"] = queue_name
            pipe.delete(keys.held_place(task_id))  # a place in another queue means nothing here
            pipe.sadd(QUEUES_KEY, queue)
        if status is TaskStatus.HELD and previous is TaskStatus.QUEUED:
            place = keys.held_place(task_id)
            pipe.eval(_SAVE_PLACE, 2, queue_key(source), place, task_id, PLACE_DEPTH)
        if state.started_entries:
            pipe.zrem(registry_key("wip", source), *state.started_entries)
        pipe.lrem(queue_key(source), 0, task_id)
        pipe.lrem(f"{queue_key(source)}:intermediate", 0, task_id)  # RQ's intermediate_queue_key
        pipe.zrem(registry_key("deferred", source), task_id)
        for dependency in after:
            pipe.srem(dependents_key(dependency), task_id)
        for kind in ("finished", "failed", "canceled"):
            pipe.zrem(registry_key(kind, source), task_id)

        if status is TaskStatus.QUEUED:
            mapping.update(enqueued_at=stamp, started_at="", ended_at="", worker_name="")
            if previous is TaskStatus.HELD:
                pipe.eval(
                    _RESTORE_PLACE, 2, queue, keys.held_place(task_id), task_id, int(at_front)
                )
            else:
                (pipe.lpush if at_front else pipe.rpush)(queue, task_id)
        elif status is TaskStatus.HELD:
            pipe.zadd(registry_key("deferred", queue_name), {task_id: "+inf"})
        elif status in ACTIVE_STATUSES:
            mapping.update(started_at=stamp, last_heartbeat=stamp, worker_name=agent or "")
            pipe.zadd(registry_key("wip", queue_name), {f"{task_id}:{EXECUTION}": "+inf"})
        elif status is not TaskStatus.WAITING:  # ended: in the registry of its RQ status
            mapping["ended_at"] = stamp
            pipe.zadd(registry_key(_RQ_STATUS[status], queue_name), {task_id: "+inf"})
        if status not in (TaskStatus.QUEUED, TaskStatus.HELD):
            pipe.delete(keys.held_place(task_id))
        pipe.hset(job_key(task_id), mapping=mapping)

    def delete(self, pipe: Pipeline, task_id: str, queue_name: str) -> None:
        """Queue the removal of a task's job from RQ: its hash, queue entries and registries."""
        pipe.lrem(queue_key(queue_name), 0, task_id)
        for kind in ("finished", "failed", "canceled", "deferred"):
            pipe.zrem(registry_key(kind, queue_name), task_id)
        pipe.zrem(registry_key("wip", queue_name), f"{task_id}:{EXECUTION}")
        pipe.delete(
            keys.held_place(task_id),
            job_key(task_id),
            dependents_key(task_id),
            _dependencies_key(task_id),
            f"rq:results:{task_id}",  # RQ's Result.get_key
            f"rq:executions:{task_id}",  # the job's ExecutionRegistry
        )
