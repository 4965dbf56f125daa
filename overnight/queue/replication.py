"""Acknowledged writes: a change counts as done once replicas have it (Redis ``WAIT``).

Redis replicates asynchronously: the master answers a write before any replica has it, so a
failover can lose the last writes the old master answered. Behind Sentinel the writes that must
survive (a submission, each status change, each batch of log lines) are followed by
``WAIT <replicas> <timeout>`` on the same connection. ``WAIT`` covers every write the connection
made before it, and replication keeps the master's order, so after a transaction (whose
connection goes back to the pool) a small write of our own to :data:`MARKER` on one connection,
then ``WAIT`` there, covers the transaction too. With a plain ``redis://`` URL nothing waits.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

MARKER = "overnight:replication"
"""The key whose increment orders after the write to acknowledge (its value means nothing)."""

DEGRADED_FOR = 30.0
"""Seconds writes go unconfirmed after a wait timed out."""

log = logging.getLogger(__name__)


class Acks:
    """How many replicas must have a write before it counts (0: none, do not wait).

    When a wait times out (the replicas are gone, as after a failover that left none), the
    next :data:`DEGRADED_FOR` seconds of writes do not wait, unconfirmed, rather than each
    stalling for the timeout; then waiting resumes.
    """

    def __init__(self, replicas: int = 0, timeout: float = 2.0) -> None:
        self.replicas = replicas
        self.timeout = timeout  # seconds one wait may take; past it the write stands unconfirmed
        self._unconfirmed_until = 0.0

    def __repr__(self) -> str:
        return f"Acks(replicas={self.replicas}, timeout={self.timeout})"

    @property
    def waiting(self) -> bool:
        """Whether writes wait for replicas now."""
        return self.replicas > 0 and time.monotonic() >= self._unconfirmed_until

    def confirm(self, client: redis.Redis, what: str) -> bool:
        """Wait until the writes made so far reached the replicas; False (and a warning) when
        too few had them within the timeout. ``what`` names the write in that warning."""
        if not self.waiting:
            return not self.replicas
        pipe = client.pipeline(transaction=False)
        pipe.incr(MARKER)
        self.queue_wait(pipe)
        return self.check(pipe.execute()[-1], what)

    def queue_wait(self, pipe: Any) -> None:
        """Add the ``WAIT`` to a non-transactional pipeline, after its writes."""
        pipe.wait(self.replicas, int(self.timeout * 1000))

    def check(self, reached: Any, what: str) -> bool:
        """Whether ``WAIT``'s reply shows enough replicas; else warns and stops waiting for a
        while."""
        if int(reached) >= self.replicas:
            return True
        self._unconfirmed_until = time.monotonic() + DEGRADED_FOR
        log.warning(
            "%s reached %d of %d replicas within %.1f s: a failover now could lose it; writes "
            "go on unconfirmed for %.0f s",
            what,
            int(reached),
            self.replicas,
            self.timeout,
            DEGRADED_FOR,
        )
        return False
