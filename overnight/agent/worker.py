"""The agent as RQ sees it: a registered worker that pops jobs and keeps RQ's registries true.

The agent never lets RQ import or perform a job function. It uses RQ for what RQ is good at
(queues, worker registration, the started/finished/failed/canceled registries that ``rq info``
and dashboards read) and runs each task itself. This module does the RQ bookkeeping around
one task: pop it, mark it started, keep its execution alive, and record how it ended.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import redis
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout
from rq.executions import Execution, prepare_execution
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat, utcparse
from rq.worker import WorkerStatus

from overnight.errors import AgentError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Claim:
    """A job this agent popped from one of its queues."""

    job: Job
    queue: Queue
    execution: Execution | None = None  # set once marked started

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
            if age < self.stale_after:
                host, pid = _text(data.get(b"hostname", "?")), _text(data.get(b"pid", "?"))
                raise AgentError(
                    f"an agent named {self.name!r} is already running (host {host}, pid {pid}); "
                    "stop it or start this one with another --name"
                )
            self.connection.delete(key, self.rq.executions_key)
        self.rq.register_birth()  # type: ignore[no-untyped-call]
        self.rq.set_state(WorkerStatus.IDLE)

    def unregister(self) -> None:
        self.rq.register_death()  # type: ignore[no-untyped-call]

    def heartbeat(self, claims: Sequence[Claim], state: str) -> None:
        """Keep the worker and its executions alive; re-register if Redis lost our entry."""
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
        for claim in claims:
            if claim.execution is not None:
                self.rq.maintain_heartbeats(claim.job, claim.execution)

    def dequeue(self, timeout: float | None) -> Claim | None:
        """The next job in queue order; blocks up to ``timeout`` seconds (None: don't block)."""
        try:
            result = Queue.dequeue_any(
                self.queues,
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

    def start(self, claim: Claim) -> None:
        """Mark the job started: an execution in the started registry, status ``started``."""
        job = claim.job
        self._forget_stale_executions(job)
        claim.execution = prepare_execution(self.rq, job)
        self.rq.prepare_job_execution(job, remove_from_intermediate_queue=True)

    def push_back(self, claim: Claim) -> None:
        """Return a popped job to the front of its queue, untouched (the agent can't take it now)."""
        with self.connection.pipeline() as pipe:
            pipe.lpush(claim.queue.key, claim.job_id)
            pipe.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)
            pipe.execute()

    def drop(self, claim: Claim) -> None:
        """Forget a popped job that needs no run (its task was canceled or is handled elsewhere)."""
        self.connection.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)
        if claim.execution is not None:
            with self.connection.pipeline() as pipe:
                self.rq.cleanup_execution(claim.job, pipe, claim.execution)
                pipe.execute()
            claim.execution = None

    def refuse(self, claim: Claim, reason: str) -> None:
        """Record a job as failed without running it (not overnight's entry point)."""
        job = claim.job
        job.retries_left = None  # never let RQ retry a job the agent refuses
        job.started_at = job.ended_at = now()
        self.connection.lrem(claim.queue.intermediate_queue_key, 1, claim.job_id)
        self.rq.handle_job_failure(job, claim.queue, exc_string=reason, execution=claim.execution)
        claim.execution = None

    def finished(self, claim: Claim) -> None:
        job = claim.job
        job.ended_at = now()
        job._result = None
        assert claim.execution is not None
        self.rq.handle_job_success(
            job, claim.queue, claim.queue.started_job_registry, claim.execution
        )
        claim.execution = None

    def failed(self, claim: Claim, message: str) -> None:
        job = claim.job
        job.retries_left = None  # overnight decides about retries, not RQ
        job.ended_at = now()
        self.rq.handle_job_failure(job, claim.queue, exc_string=message, execution=claim.execution)
        claim.execution = None

    def canceled(self, claim: Claim) -> None:
        job = claim.job
        job.ended_at = now()
        with self.connection.pipeline() as pipe:
            job.set_status(JobStatus.CANCELED, pipeline=pipe)
            pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
            CanceledJobRegistry(job.origin, self.connection, serializer=JSONSerializer).add(
                job, pipeline=pipe
            )
            if claim.execution is not None:
                self.rq.cleanup_execution(job, pipe, claim.execution)
            pipe.execute()
        claim.execution = None

    def release(self, claim: Claim) -> None:
        """End our execution and leave the job's status to whoever requeues it."""
        self.drop(claim)

    def maintain(self) -> None:
        """RQ's own registry upkeep, at most every ten minutes across all workers of a queue."""
        if self.rq.should_run_maintenance_tasks:
            self.rq.clean_registries()  # type: ignore[no-untyped-call]

    def _forget_stale_executions(self, job: Job) -> None:
        """Executions of this job left by an agent that died: they must not fail it later."""
        key = f"rq:executions:{job.id}"
        stale = [_text(m) for m in self.connection.zrange(key, 0, -1)]
        if not stale:
            return
        with self.connection.pipeline() as pipe:
            for execution_id in stale:
                composite = f"{job.id}:{execution_id}"
                pipe.zrem(job.started_job_registry.key, composite)
                pipe.delete(f"rq:execution:{composite}")
            pipe.delete(key)
            pipe.execute()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
