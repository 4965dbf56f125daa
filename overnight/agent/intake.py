"""Turning a popped RQ job into a claimed task, or refusing, dropping or handing it back.

The daemon pops a job and gives it to :meth:`Intake.take`. A job that does not name overnight's
entry point is refused (failed in RQ, never run). A task that is no longer queued is dropped. A
task that needs GPUs or a slot this agent has not free now goes back to the front of its queue;
one that asks for more than this agent will ever offer also leaves its queue alone for a few
seconds, with a note on the task. Otherwise the record moves ``queued`` -> ``preparing`` (this
agent, its GPUs) and the task is launched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from overnight.agent.allocator import Allocator, Verdict
from overnight.agent.settings import AgentConfig
from overnight.agent.worker import AgentWorker, Claim
from overnight.errors import CorruptRecord, InvalidTransition, TaskNotFound
from overnight.queue.jobs import is_overnight_job, record_refusal, refusal_message, task_id_of
from overnight.queue.records import Phase, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)

WAKE = 0.5  # longest wait for resources before the daemon looks at its queues again
SKIP_QUEUE = 5.0  # seconds a queue is left alone after its head asked for more than we offer

Launch = Callable[[TaskRecord, tuple[str, ...]], None]


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

    def skipped(self) -> set[str]:
        """Queues to leave alone now: their head task is too large for this agent."""
        now = time.monotonic()
        return {q for q, until in self._skip.items() if until > now}

    def take(self, claim: Claim) -> None:
        """Claim a popped job: refuse it, drop it, hand it back, or launch its task.

        Safe to call again after a Redis outage interrupted it: a claim already written
        (``preparing`` by this agent, resources held) goes on from there.
        """
        job = claim.job
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
        if record.status is not TaskStatus.QUEUED:
            log.info("task %s is %s, not queued; skipping it", task_id, record.status.value)
            self.worker.drop(claim)
            return
        gpu_ids = self._resources(claim, record)
        if gpu_ids is None:
            return
        try:
            record = self.store.transition(
                task_id,
                TaskStatus.PREPARING,
                expect={TaskStatus.QUEUED},
                note=f"taken by agent {self.name}",
                heartbeat_ttl=self.config.lost_ttl,
                agent=self.name,
                gpu_ids=gpu_ids,
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
            return decision.gpu_ids
        self.worker.push_back(claim)
        if decision.verdict is Verdict.WAIT:
            self.allocator.wait(WAKE)
        else:  # this agent can never run it: leave its queue to other agents for a while
            self.allocator.withdraw(record.id)
            self._skip[claim.queue.name] = time.monotonic() + SKIP_QUEUE
            note = f"agent {self.name} cannot run it: {decision.reason}"
            if note not in record.notes:
                self.store.add_note(record.id, note)
        return None

    def give_up(self, claim: Claim, exc: Exception) -> None:
        """A claim that failed for an unexpected reason: fail its task, keep serving."""
        log.exception("agent error while taking job %s", claim.job_id)
        message = f"agent {self.name} could not take the task: {type(exc).__name__}: {exc}"
        try:
            self.allocator.release(claim.job_id)
            self.store.transition(
                claim.job_id,
                TaskStatus.FAILED,
                expect={TaskStatus.QUEUED, TaskStatus.PREPARING},
                phase=Phase.AGENT,
                error=message,
                note=message,
            )
        except Exception:
            log.exception("could not record the failure of %s", claim.job_id)
            self.worker.drop(claim)
