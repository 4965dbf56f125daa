"""Faults of the agent's host, not of the task: a full disk, a used-up quota.

A task that meets one while its tree or environment is made, or its process or container is
started, is put back at the front of its queue instead of failed, and the agent takes no task
for ``fault_pause`` seconds (``overnight workers`` says why and until when), then tries again.
So a full disk costs a sweep a pause, not every one of its tasks a failure; a task that meets
one for the third time fails (it may never fit). A run that fills the disk itself fails as
usual: that may be its own doing.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable

_BY_ERRNO = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_MARKERS = tuple(_BY_ERRNO.values())  # as git, uv, pip and docker print them (any case)


def host_fault(exc: BaseException) -> str | None:
    """What host fault caused ``exc`` (its causes and contexts included); None if none did."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _BY_ERRNO:
            return _BY_ERRNO[current.errno]
        text = str(current).lower()
        for marker in _MARKERS:
            if marker in text:
                return marker
        current = current.__cause__ or current.__context__
    return None


class FaultHold:
    """Whether the agent holds off taking tasks after a host fault, why, and until when."""

    def __init__(self, pause: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.pause = pause
        self._clock = clock
        self._lock = threading.Lock()
        self._reason = ""
        self._until = 0.0

    def hold(self, reason: str) -> None:
        """Take no task for ``pause`` seconds from now, because of ``reason``."""
        with self._lock:
            self._reason = reason
            self._until = self._clock() + self.pause

    def current(self) -> tuple[str, float] | None:
        """(why, seconds left) while the hold lasts, else None."""
        with self._lock:
            left = self._until - self._clock()
            return (self._reason, left) if left > 0 else None
