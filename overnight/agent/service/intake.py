"""Turning a popped RQ job into a claimed task, or refusing, dropping or handing it back.

The daemon pops a job and gives it to :meth:`Intake.take`. A job that does not name overnight's
entry point is refused (failed in RQ, never run). A task that is no longer queued is dropped. A
task that needs GPUs or a slot this agent has not free now goes back to the front of its queue and
keeps its reservation in the allocator; its queue is left alone until the allocator says it would
be granted (or ``RECHECK`` seconds pass: foreign GPU use ends without an event, and reservations
must be renewed). One that asks for more than this agent will ever offer gets a note; when no
live agent offers it, it goes to the back of its queue so the tasks behind it run, otherwise it
stays at the head and this agent leaves the queue alone for a few seconds. Otherwise the record
moves ``queued`` -> ``preparing`` (this agent, its GPUs) and the task is launched.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

from overnight.agent.config import AgentConfig
from overnight.agent.gpus.allocator import Allocator, Verdict
from overnight.agent.service.rqworker import AgentWorker, Claim
from overnight.errors import CorruptRecord, InvalidTransition, TaskNotFound
from overnight.queue.agents import AgentRegistry
from overnight.queue.jobs import is_overnight_job, record_refusal, refusal_message, task_id_of
from overnight.queue.records import Change, Phase, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)

RECHECK = 5.0  # seconds before a waiting head is popped again although no GPU was released
SKIP_QUEUE = 5.0  # seconds a queue is left alone after its head asked for more than we offer

Launch = Callable[[TaskRecord, tuple[str, ...]], None]


@dataclasses.dataclass(frozen=True)
class _Head:
    """A queue's head task that waits for room here; its queue is not popped meanwhile."""

    task_id: str
    recheck: float  # monotonic time to pop it again even without a release


class Intake:
    """Claims popped jobs for one agent."""

    def __init__(
        self,
        config: AgentConfig,
        store: TaskStore,
        worker: AgentWorker,
        allocator: Allocator,
        *,
        launch: Launch,
        is_active: Callable[[str], bool],
    ) -> None:
        self.config = config
        self.store = store
        self.worker = worker
        self.allocator = allocator
        self.name = worker.name
        self._launch = launch
        self._is_active = is_active
        self._skip: dict[str, float] = {}  # queue name -> monotonic time to look at it again
        self._waiting: dict[str, _Head] = {}  # queue name -> its head, reserved here
        self._sent_back: dict[str, float] = {}  # task id -> until when it counts as sent back
        self.refused: dict[str, str] = {}  # task id -> why this agent can never run it

    def skipped(self) -> set[str]:
        """Queues to leave alone now: their head is too large, or waits and cannot start yet."""
        now = time.monotonic()
        skip = {q for q, until in self._skip.items() if until > now}
        skip.update(
            queue
            for queue, head in self._waiting.items()
            if head.recheck > now and not self.allocator.ready(head.task_id)
        )
        return skip

    def waiting(self) -> bool:
        """Whether some queue's head waits for room on this agent."""
        return bool(self._waiting)

    def emptied(self, queues: Iterable[str]) -> None:
        """``queues`` were found empty: their waiting heads left (taken elsewhere, canceled)."""
        for queue in queues:
            self._forget(queue)

    def _forget(self, queue: str, unless: str | None = None) -> None:
        head = self._waiting.get(queue)
        if head is not None and head.task_id != unless:
            del self._waiting[queue]
            self.allocator.withdraw(head.task_id)

    def take(self, claim: Claim) -> None:
        """Claim a popped job: refuse it, drop it, hand it back, or launch its task.

        Safe to call again after a Redis outage interrupted it: a claim already written
        (``preparing`` by this agent, resources held) goes on from there, and one that never
        reached Redis (still ``queued``, as after a failover that lost it) is made again with
        the resources held for it.
        """
        job = claim.job
        # Whatever was popped is the head now; a different task waiting here has left it.
        self._forget(claim.queue.name, unless=task_id_of(job) if is_overnight_job(job) else None)
        if not is_overnight_job(job):
            message = refusal_message(job)
            log.warning("%s", message)
            record_refusal(job, message)
            self.worker.refuse(claim, message)
            return
        task_id = task_id_of(job)
        try:
            record = self.store.get(task_id)
        except TaskNotFound:
            self.worker.refuse(claim, f"refused by agent {self.name}: no task {task_id} stored")
            return
        except CorruptRecord as exc:
            log.error("%s", exc)
            self.worker.refuse(claim, f"refused by agent {self.name}: {exc}")
            return
        held = self.allocator.holders().get(task_id)
        if (
            held is not None
            and record.status is TaskStatus.PREPARING
            and record.agent == self.name
            and not self._is_active(task_id)
        ):
            self._launch(record, held)  # claimed before an outage cut this call short
            return
        if record.status is TaskStatus.QUEUED and self._is_active(task_id):
            # This agent's run of an earlier attempt goes on: its heartbeats lapsed and the task
            # was requeued. The next heartbeat stops that run; then the task can be taken again.
            self.worker.push_back(claim)
            self._skip[claim.queue.name] = time.monotonic() + RECHECK
            return
        if record.status is not TaskStatus.QUEUED:
            log.info("task %s is %s, not queued; skipping it", task_id, record.status.value)
            self.worker.drop(claim)
            return
        if held is not None and not self._is_active(task_id):
            gpu_ids: tuple[str, ...] | None = held  # a take cut short before its claim was stored
        else:
            gpu_ids = self._resources(claim, record)
        if gpu_ids is None:
            return
        try:
            record = self.store.transition(
                task_id,
                TaskStatus.PREPARING,
                Change(agent=self.name, gpu_ids=gpu_ids),
                expect={TaskStatus.QUEUED},
                on_queue=claim.queue.name,
                note=f"taken by agent {self.name}",
                heartbeat_ttl=self.config.lost_ttl,
            )
        except InvalidTransition:
            self.allocator.release(task_id)
            self.worker.drop(claim)
            return
        self._launch(record, gpu_ids)

    def _resources(self, claim: Claim, record: TaskRecord) -> tuple[str, ...] | None:
        """The GPUs granted to the task (``()``: a CPU slot), or None after handing it back."""
        decision = self.allocator.plan(record.id, record.options.gpus)
        if decision.verdict is Verdict.GRANTED:
            self._waiting.pop(claim.queue.name, None)
            return decision.gpu_ids
        if decision.verdict is Verdict.WAIT:
            self.worker.push_back(claim)
            self._waiting[claim.queue.name] = _Head(record.id, time.monotonic() + RECHECK)
            return None
        # This agent can never run it.
        self.allocator.withdraw(record.id)
        note = f"agent {self.name} cannot run it: {decision.reason}"
        self.refused[record.id] = decision.reason
        if note not in record.notes:
            self.store.add_note(record.id, note)
            log.warning("task %s in %s: %s", record.id, claim.queue.name, note)
        if self._nobody_runs(record):  # it must not block the tasks behind it
            self.worker.send_to_back(claim)
        else:  # at the head for the agent that can run it; its queue left alone for a while
            self.worker.push_back(claim)
            self._skip[claim.queue.name] = time.monotonic() + SKIP_QUEUE
        return None

    def _nobody_runs(self, record: TaskRecord) -> bool:
        """No live agent offers what ``record`` asks for, and it has not come round again since
        it was last sent to the back (then the queue holds nothing else to run)."""
        now = time.monotonic()
        self._sent_back = {t: until for t, until in self._sent_back.items() if until > now}
        if record.id in self._sent_back:
            return False
        queue, wanted = record.options.queue, record.options.gpus
        for agent in AgentRegistry(self.store.redis).list():
            if queue in agent.queues and len(agent.gpus) >= wanted:
                return False
        self._sent_back[record.id] = now + SKIP_QUEUE
        return True

    def left_behind(self) -> list[str]:
        """Why each task this agent refused is still queued, for a ``--burst`` agent's exit."""
        lines = []
        for task_id, reason in self.refused.items():
            try:
                record = self.store.get(task_id)
            except (TaskNotFound, CorruptRecord):
                continue
            if record.status is TaskStatus.QUEUED:
                lines.append(
                    f"task {task_id} stays queued in {record.options.queue}: this agent cannot "
                    f"run it ({reason})"
                )
        return lines

    def give_up(self, claim: Claim, exc: Exception) -> None:
        """A claim that failed for an unexpected reason: fail its task, keep serving."""
        log.exception("agent error while taking job %s", claim.job_id)
        message = f"agent {self.name} could not take the task: {type(exc).__name__}: {exc}"
        try:
            self.allocator.release(claim.job_id)
            self.store.transition(
                claim.job_id,
                TaskStatus.FAILED,
                Change(phase=Phase.AGENT, error=message),
                expect={TaskStatus.QUEUED, TaskStatus.PREPARING},
                note=message,
            )
        except Exception:
            log.exception("could not record the failure of %s", claim.job_id)
            self.worker.drop(claim)
