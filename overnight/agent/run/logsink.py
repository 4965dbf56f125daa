"""A task's log sink that survives Redis outages: lines wait in memory, then on disk, in order.

While Redis answers, each batch goes straight to the store. When a send fails for want of a
connection, the batch and every later one are held: in memory up to a byte bound, beyond that
appended to a spill file. The backlog is replayed oldest first (spill file, then memory) once
Redis answers again, so the task's log ends up complete and in order.

Lines the agent writes itself (:meth:`LogSink.line`: preparation progress, notes) go out with the
task's next batch or at the next :meth:`LogSink.flush`, which the agent's housekeeping calls every
``control_interval``: a task's preparation costs one round trip, not one per line. They are stored
marked as the agent's (:mod:`overnight.queue.logs`), so the task's output cannot pass for them;
output that a build relays through :meth:`LogSink.line` is wrapped in :class:`~overnight.agent.run.logbatch.Output`
to be stored as what it is, and the agent's notices among a task's output batches are
:class:`~overnight.agent.run.logbatch.Notice` lines.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from overnight.agent.run.logbatch import Line, Notice, Output
from overnight.agent.service.reconnect import CONNECTION_ERRORS

Entry = tuple[float, str, bool]  # (unix time, text, written by the agent)
Append = Callable[[Sequence[Entry]], None]

log = logging.getLogger(__name__)

_LINE_OVERHEAD = 32  # rough bytes per held line besides its text
_REPLAY_CHUNK = 2000  # lines sent per call while replaying


class LogSink:
    """Sends batches of ``(time, line, by_agent)`` to ``append``; holds them while Redis is away.

    Calls never raise and never wait for an outage to end; :meth:`flush` says whether
    everything has been delivered.
    """

    def __init__(
        self,
        append: Append,
        spill_file: Path,
        *,
        memory_bytes: int = 8 * 1024 * 1024,
        retry_interval: float = 1.0,
    ) -> None:
        self._append = append
        self._spill = spill_file
        self._memory_bytes = memory_bytes
        self._retry_interval = retry_interval
        self._held: collections.deque[Entry] = collections.deque()
        self._held_bytes = 0
        self._spilled = 0  # lines in the spill file not yet delivered
        self._spill_offset = 0  # byte offset of the first undelivered spilled line
        self._retry_at = 0.0
        self._unsent: list[Entry] = []  # lines from :meth:`line`, waiting for a batch or a flush
        self._lock = threading.Lock()

    def __call__(self, lines: Sequence[Line]) -> None:
        with self._lock:
            batch = [
                *self._unsent,
                *((at, str(text), isinstance(text, Notice)) for at, text in lines),
            ]
            self._unsent = []
            if not batch:
                return
            if not self._held and not self._spilled and self._send(batch):
                return
            self._hold(batch)
            self._drain(force=False)

    def line(self, text: str) -> None:
        """One line written now (preparation progress, agent notes); sent at the next batch or
        flush. Stored as the agent's, unless ``text`` is an :class:`Output`."""
        with self._lock:
            self._unsent.append((time.time(), str(text), not isinstance(text, Output)))

    def flush(self, *, force: bool = True) -> bool:
        """Try to deliver every line; True when nothing waits any more.

        Without ``force``, lines held through an outage wait for the retry interval.
        """
        with self._lock:
            if self._unsent:
                self._hold(self._unsent)
                self._unsent = []
            return self._drain(force=force)

    @property
    def pending(self) -> int:
        """Lines not delivered yet."""
        with self._lock:
            return len(self._unsent) + len(self._held) + self._spilled

    def close(self) -> None:
        """Forget the spill file once everything was delivered."""
        with self._lock:
            if not self._unsent and not self._held and not self._spilled:
                self._spill.unlink(missing_ok=True)

    def _send(self, batch: Sequence[Entry]) -> bool:
        try:
            self._append(batch)
        except CONNECTION_ERRORS as exc:
            self._retry_at = time.monotonic() + self._retry_interval
            log.debug("log lines held while Redis is away: %s", exc)
            return False
        except Exception:  # a bug or bad data must not stop the task, nor stall its log
            log.exception("log batch dropped")
        return True

    def _hold(self, batch: Sequence[Entry]) -> None:
        for entry in batch:
            self._held.append(entry)
            self._held_bytes += len(entry[1]) + _LINE_OVERHEAD
        if self._held_bytes > self._memory_bytes:
            self._spill_held()

    def _spill_held(self) -> None:
        try:
            self._spill.parent.mkdir(parents=True, exist_ok=True)
            with self._spill.open("a", encoding="utf-8") as out:
                out.writelines(json.dumps(entry) + "\n" for entry in self._held)
        except OSError:
            log.exception("cannot spill log lines to %s; keeping them in memory", self._spill)
            return
        self._spilled += len(self._held)
        self._held.clear()
        self._held_bytes = 0

    def _drain(self, *, force: bool) -> bool:
        if not self._held and not self._spilled:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        while self._spilled:
            chunk, offset = self._read_spilled()
            if not chunk:
                break
            if not self._send(chunk):
                return False
            self._spilled -= len(chunk)
            self._spill_offset = offset
            if not self._spilled:
                self._spill.unlink(missing_ok=True)
                self._spill_offset = 0
        while self._held:
            chunk = [self._held[i] for i in range(min(_REPLAY_CHUNK, len(self._held)))]
            if not self._send(chunk):
                return False
            for entry in chunk:
                self._held.popleft()
                self._held_bytes -= len(entry[1]) + _LINE_OVERHEAD
        return True

    def _read_spilled(self) -> tuple[list[Entry], int]:
        chunk: list[Entry] = []
        with self._spill.open("r", encoding="utf-8") as src:
            src.seek(self._spill_offset)
            while len(chunk) < min(_REPLAY_CHUNK, self._spilled):
                raw = src.readline()
                if not raw:
                    break
                at, text, *by_agent = json.loads(raw)  # no flag: spilled by an older agent
                agent = bool(by_agent[0]) if by_agent else str(text).startswith("[overnight]")
                chunk.append((float(at), str(text), agent))
            offset = src.tell()
        if not chunk:  # the file lost lines (disk trouble): nothing more to replay from it
            self._spilled = 0
            self._spill_offset = 0
        return chunk, offset
