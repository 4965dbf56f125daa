"""A cross-process lock on a file, for caches that several agents on one host share.

Built on ``flock``: the kernel drops the lock when its holder dies, so a crashed agent never
leaves a stale lock behind. Each :class:`FileLock` object opens its own descriptor, so two
objects on one path exclude each other even inside one process (threads included).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from overnight.errors import LockTimeout


class FileLock:
    """An exclusive (or, with ``shared=True``, shared) lock on ``path``; a context manager.

    ``timeout`` is the default wait for :meth:`acquire` and ``with``: None waits forever,
    0 tries once. Not reentrant: one object, one holder.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout: float | None = None,
        shared: bool = False,
        poll_interval: float = 0.05,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.shared = shared
        self.poll_interval = poll_interval
        self._fd: int | None = None
        self._release_lock = threading.Lock()  # release may race from a finalizer

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(
        self,
        timeout: float | None = -1.0,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Take the lock; True once held, False if ``should_stop()`` turned true while waiting.

        ``timeout`` defaults to the object's; raises :class:`LockTimeout` when it runs out.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this FileLock")
        wait = self.timeout if timeout is not None and timeout < 0 else timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        start = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, mode)
                except BlockingIOError:
                    pass
                else:
                    self._fd, fd = fd, -1
                    return True
                if should_stop is not None and should_stop():
                    return False
                if wait is not None and time.monotonic() - start >= wait:
                    raise LockTimeout(
                        f"could not lock {self.path} within {wait:g}s: another process holds "
                        "it; wait for it to finish or remove that process"
                    )
                time.sleep(self.poll_interval)
        finally:
            if fd >= 0:
                os.close(fd)

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now."""
        try:
            return self.acquire(0)
        except LockTimeout:
            return False

    def release(self) -> None:
        """Drop the lock; does nothing when it is not held."""
        with self._release_lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
