"""Taking only tasks that fit before the agent's window closes.

Inside a window that closes (``--uptime``/``--downtime``), the agent does not pop its queues'
heads blindly: it reads the first :data:`DEPTH` ids of each queue in order and takes the first
task expected to end before the close (:mod:`overnight.queue.estimates`; a task of unknown
length is taken), out of the middle of the list if need be, atomically
(:meth:`AgentWorker.take`); the tasks it passes over keep their places. Why each one waits is
written where ``overnight show`` reads it (``keys.wait_reason``, expiring) and kept for the
agent's registry entry (``overnight workers``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from overnight.agent.service.rqworker import AgentWorker, Claim
from overnight.queue import keys, order
from overnight.queue.estimates import Estimates
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.units import format_duration

DEPTH = 50
"""How far down each queue the agent looks for a task that fits."""

RELEARN = 60.0
"""Seconds the learned run times are reused before finished tasks are read again."""

REASON_TTL = 30
"""Seconds a task's "why it waits" outlives the agent's last look at it."""


def wait_reason(agent: str, expected: str, left: float) -> str:
    """ "agent gpu-1: expected 3h (--expect), window closes in 1h20m"."""
    return f"agent {agent}: expected {expected}, window closes in {format_duration(left)}"


class WindowFit:
    """Finds, for one agent, the next task that fits the time its window has left."""

    def __init__(self, store: TaskStore, worker: AgentWorker, *, depth: int = DEPTH) -> None:
        self.store = store
        self.worker = worker
        self.depth = depth
        self.waits: dict[str, str] = {}  # task id -> why it waits, from the last look
        self._estimates = Estimates(store)
        self._learned = time.monotonic()

    def take(
        self, queues: Sequence[str], left: float, *, skip: Collection[str] = ()
    ) -> Claim | None:
        """The first task, in queue order, expected to end within ``left`` seconds, claimed
        from its queue's list; None when none fits (or all are taken meanwhile)."""
        if time.monotonic() - self._learned > RELEARN:
            self._estimates = Estimates(self.store)
            self._learned = time.monotonic()
        waits: dict[str, str] = {}
        try:
            for queue in queues:
                if queue in skip:
                    continue
                ids = order.queue_order(self.store, queue)[: self.depth]
                for record in self.store.get_many(ids):
                    if record.status is not TaskStatus.QUEUED:
                        continue
                    estimate = self._estimates.of(record)
                    if estimate is not None and estimate.seconds > left:
                        waits[record.id] = wait_reason(self.worker.name, estimate.describe(), left)
                        continue
                    claim = self.worker.take(queue, record.id)
                    if claim is not None:
                        return claim
            return None
        finally:
            self._publish(waits)

    def _publish(self, waits: dict[str, str]) -> None:
        self.waits = waits
        if waits:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for task_id, why in waits.items():
                    pipe.set(keys.wait_reason(task_id), why, ex=REASON_TTL)
                pipe.execute()
