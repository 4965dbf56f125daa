"""The agent as RQ sees it: a registered worker that pops jobs and keeps RQ's registries true.

The agent never lets RQ import or perform a job function. It uses RQ for queues and worker
registration (``rq info`` lists it) and runs each task itself. This module pops jobs, hands
back the ones the agent cannot take now and refuses foreign ones (without RQ's failure
handling, which would send their webhooks); the task store mirrors every status change of a task
onto its RQ job and registries (:mod:`overnight.queue.rqsync`), and overnight's own upkeep
(:mod:`overnight.queue.upkeep`) cleans what others left there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Collection, Sequence
from datetime import timedelta

import redis
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat, utcparse
from rq.worker import WorkerStatus

from overnight.errors import AgentError
from overnight.queue.jobs import fail_in_rq
from overnight.queue.upkeep import clean

log = logging.getLogger(__name__)

_TAKE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
"""One id out of a queue list into its intermediate list, atomically (RQ's LMOVE, mid-list)."""


@dataclasses.dataclass
class Claim:
    """A job this agent popped from one of its queues."""

    job: Job
    queue: Queue

    @property
    def job_id(self) -> str:
        return str(self.job.id)


class AgentWorker:
    """One RQ worker per agent, shared by all the tasks the agent runs at once.

    ``connection`` serves short commands; ``blocking`` (a client whose socket timeout exceeds
    the longest pop) serves the blocking pops, so a wait for work never reads as an outage.
    """

    def __init__(
        self,
        connection: redis.Redis,
        blocking: redis.Redis,
        name: str,
        queues: Sequence[str],
        *,
        stale_after: float = 60.0,
    ) -> None:
        self.connection = connection
        self.blocking = blocking
        self.stale_after = stale_after
        self.rq = Worker(
            list(queues),
            name=name,
            connection=connection,
            serializer=JSONSerializer,
            log_job_description=False,
        )
        self.rq.log_result_lifespan = False
        self.queues = [Queue(q, connection=blocking, serializer=JSONSerializer) for q in queues]

    @property
    def name(self) -> str:
        return str(self.rq.name)

    def register(self) -> None:
        """Register with RQ (``rq info`` shows it); a dead namesake's leftover entry is replaced."""
        key = self.rq.key
        data = self.connection.hgetall(key)
        if data and b"death" not in data:
            beat = data.get(b"last_heartbeat")
            age = (now() - utcparse(_text(beat))).total_seconds() if beat else 1e9
            host, pid = _text(data.get(b"hostname", "?")), _text(data.get(b"pid", "?"))
            if age < self.stale_after and not _dead_here(host, pid):
                raise AgentError(
                    f"an agent named {self.name!r} is already running (host {host}, pid {pid}); "
                    "stop it or start this one with another --name"
                )
            self.connection.delete(key, self.rq.executions_key)
        self.rq.register_birth()  # type: ignore[no-untyped-call]
        self.rq.set_state(WorkerStatus.IDLE)

    def unregister(self) -> None:
        self.rq.register_death()  # type: ignore[no-untyped-call]

    def heartbeat(self, state: str) -> None:
        """Keep the worker alive and its state current; re-register if Redis lost our entry."""
        self.rq.last_heartbeat = now()
        with self.connection.pipeline() as pipe:
            pipe.hset(self.rq.key, "last_heartbeat", utcformat(self.rq.last_heartbeat))
            pipe.expire(self.rq.key, self.rq.worker_ttl + 60)
            pipe.expire(self.rq.executions_key, self.rq.worker_ttl + 60)
            created = pipe.execute()[0] == 1
        if created:  # Redis came back without our key (restarted, flushed)
            log.info("re-registering worker %s with RQ", self.name)
            self.connection.delete(self.rq.key)
            self.rq.register_birth()  # type: ignore[no-untyped-call]
        self.rq.set_state(state)

    def dequeue(self, timeout: float | None, *, skip: Collection[str] = ()) -> Claim | None:
        """The next job in queue order; blocks up to ``timeout`` seconds (None: don't block).

        Queues named in ``skip`` are left alone this time.
        """
        queues = [q for q in self.queues if q.name not in skip]
        if not queues:
            return None
        try:
            result = Queue.dequeue_any(
                queues,
                timeout,  # type: ignore[arg-type]  # RQ passes it to BLPOP/BLMOVE, which take floats
                connection=self.blocking,
                serializer=JSONSerializer,
            )
        except DequeueTimeout:
            return None
        if result is None:
            return None
        job, queue = result
        job.connection = self.connection
        return Claim(
            job=job, queue=Queue(queue.name, connection=self.connection, serializer=JSONSerializer)
        )

    def take(self, queue_name: str, job_id: str) -> Claim | None:
        """Pop this job from wherever it stands in its queue, as RQ's pop does from the head (into
        the queue's intermediate list), leaving the others in place; None when it is no longer
        there (taken, held or moved meanwhile) or its job is gone."""
        queue = Queue(queue_name, connection=self.connection, serializer=JSONSerializer)
        if not self.connection.eval(_TAKE, 2, queue.key, queue.intermediate_queue_key, job_id):
            return None
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except Exception:  # NoSuchJobError, or a hash made unreadable: as RQ's pop skips it
            self.connection.lrem(queue.intermediate_queue_key, 1, job_id)
            return None
        return Claim(job=job, queue=queue)

    def push_back(self, claim: Claim) -> None:
        """Return a popped job to the front of its queue, untouched (the agent can't take it now)."""
        with self.connection.pipeline() as pipe:
            pipe.lpush(claim.queue.key, claim.job_id)
            pipe.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)
            pipe.execute()

    def send_to_back(self, claim: Claim) -> None:
        """Return a popped job to the end of its queue: the jobs behind it go first."""
        with self.connection.pipeline() as pipe:
            pipe.rpush(claim.queue.key, claim.job_id)
            pipe.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)
            pipe.execute()

    def drop(self, claim: Claim) -> None:
        """Forget a popped job that needs no run (its task was canceled or is handled elsewhere)."""
        self.connection.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)

    def refuse(self, claim: Claim, reason: str) -> None:
        """Record a job as failed without running it, nor anything it asks RQ for (retries,
        webhooks, callbacks, dependents): see :func:`overnight.queue.jobs.fail_in_rq`."""
        self.connection.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)
        fail_in_rq(self.connection, claim.job_id, claim.queue.name, reason, worker_name=self.name)
        with self.connection.pipeline() as pipe:
            self.rq.increment_failed_job_count(pipe)
            pipe.execute()

    def count(self, *, finished: bool, seconds: float) -> None:
        """Add one task to the worker's statistics (``rq info`` shows them)."""
        with self.connection.pipeline() as pipe:
            if finished:
                self.rq.increment_successful_job_count(pipe)
            else:
                self.rq.increment_failed_job_count(pipe)
            self.rq.increment_total_working_time(timedelta(seconds=seconds), pipe)
            pipe.execute()

    def maintain(self) -> None:
        """Registry upkeep, at most every ten minutes across all workers of a queue: overnight's
        own (:mod:`overnight.queue.upkeep`), never RQ's, which runs what stale jobs name."""
        if self.rq.should_run_maintenance_tasks:
            clean(self.connection, [q.name for q in self.queues], worker_name=self.name)
            self.rq.last_cleaned_at = now()  # type: ignore[assignment]  # RQ types it None


def _dead_here(host: str, pid: str) -> bool:
    """Whether the namesake ran on this host as a process that no longer exists."""
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
