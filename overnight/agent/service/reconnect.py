"""Riding out Redis outages: which errors mean "Redis is away", and waiting with backoff.

The agent never gives up on Redis: every call in its loops is retried after a growing pause
(capped), so a restart or a network blip delays the bookkeeping but never ends the daemon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import redis

from overnight.errors import ConnectionFailed

T = TypeVar("T")

CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionFailed,
)
"""What a Redis outage looks like to a caller: retry later, never give up."""

log = logging.getLogger(__name__)


class Backoff:
    """Pauses that double from ``first`` up to ``longest``; :meth:`reset` after a success."""

    def __init__(self, first: float = 0.25, longest: float = 10.0) -> None:
        self.first = first
        self.longest = longest
        self._next = first
        self.failures = 0

    def reset(self) -> None:
        if self.failures:
            log.warning("Redis answers again after %d failed attempts", self.failures)
        self._next = self.first
        self.failures = 0

    def wait(self, error: BaseException, stop: threading.Event | None = None) -> bool:
        """Sleep before the next attempt; True when ``stop`` was set meanwhile."""
        if self.failures == 0:
            log.warning("Redis is unreachable (%s); retrying with backoff", error)
        self.failures += 1
        pause, self._next = self._next, min(self._next * 2, self.longest)
        if stop is None:
            threading.Event().wait(pause)
            return False
        return stop.wait(pause)


def until_connected(
    call: Callable[[], T], backoff: Backoff, stop: threading.Event | None = None
) -> T | None:
    """``call()``, retried through outages; None when ``stop`` was set before it succeeded."""
    while True:
        try:
            result = call()
        except CONNECTION_ERRORS as exc:
            if backoff.wait(exc, stop):
                return None
            continue
        backoff.reset()
        return result
