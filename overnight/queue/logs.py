"""Task logs: one Redis stream per task, appended in batches, capped in bytes.

Each entry has the fields ``t`` (unix time) and ``line`` (one line, no newline); a line the agent
wrote itself (``[overnight] ...``) also has ``by`` = ``agent``, which no output of the task can
set, so a task cannot forge the agent's messages. Logs written before that field existed have no
``marked`` flag in their meta hash; there a line starting with ``[overnight]`` counts as the
agent's, as it did then. When a log grows past its cap the oldest entries are trimmed and
readers see a marker line in their place, so a reader always knows that the head is missing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from overnight.queue import keys, replies
from overnight.queue.replication import Acks
from overnight.units import format_bytes

DEFAULT_CAP_BYTES = 50 * 1024 * 1024
AGENT_PREFIX = "[overnight]"
"""How the agent's own lines start."""
_TRIM_TO = 0.9  # trim to 90% of the cap, so a full log is not trimmed on every batch
_TRIM_CHUNK = 1000


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One line of a task's output."""

    id: str  # the stream entry id; pass it as ``after`` to read what follows
    time: float
    line: str
    marker: bool = False  # True for overnight's own notice that the head of the log was trimmed
    agent: bool = False  # written by the agent, not by the task

    @property
    def forged(self) -> bool:
        """Task output that starts like one of overnight's lines (``[overnight] ...``, or the
        ``[overnight: ... trimmed]`` marker)."""
        return not self.agent and not self.marker and self.line.startswith(AGENT_PREFIX[:-1])


class LogStore:
    """Appends to, reads and follows task logs."""

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        cap_bytes: int = DEFAULT_CAP_BYTES,
        acks: Acks | None = None,
    ) -> None:
        self._redis = redis_client
        self.cap_bytes = cap_bytes
        self._acks = acks or Acks()

    def append(
        self, task_id: str, batch: Sequence[tuple[float, str] | tuple[float, str, bool]]
    ) -> None:
        """Add lines (unix time, text without newline, and whether the agent wrote it: False
        when left out) in one round trip, acknowledged by the replicas when the store asks for
        that (the ``WAIT`` goes in the same round trip); trims past the cap."""
        if not batch:
            return
        key = keys.log(task_id)
        meta = keys.log_meta(task_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(meta, "marked", 1)
        added = 0
        for entry in batch:
            stamp, line = entry[0], entry[1]
            fields: dict[Any, Any] = {"t": f"{stamp:.3f}", "line": line}
            if len(entry) == 3 and entry[2]:
                fields["by"] = "agent"
            pipe.xadd(key, fields)
            added += len(line.encode("utf-8", "replace"))
        pipe.hincrby(meta, "bytes", added)
        if self._acks.waiting:
            self._acks.queue_wait(pipe)
            *_, total, reached = pipe.execute()
            self._acks.check(reached, f"task {task_id}'s log batch")
        else:
            total = pipe.execute()[-1]
        total = int(total)
        if total > self.cap_bytes:
            self._trim(task_id, total)

    def _trim(self, task_id: str, total: int) -> None:
        key = keys.log(task_id)
        target = int(self.cap_bytes * _TRIM_TO)
        freed = lines = 0
        keep_from: str | None = None
        start = "-"
        while keep_from is None:
            chunk = _raw_entries(self._redis.xrange(key, min=start, count=_TRIM_CHUNK))
            if not chunk:
                break
            for entry_id, fields in chunk:
                if total - freed <= target:
                    keep_from = entry_id
                    break
                freed += len(fields.get(b"line", b""))
                lines += 1
            else:
                start = "(" + chunk[-1][0]
        if keep_from is None:  # everything would go: keep the newest line
            last = _raw_entries(self._redis.xrevrange(key, count=1))
            if not last:
                return
            keep_from = last[0][0]
            freed -= len(last[0][1].get(b"line", b""))
            lines -= 1
        pipe = self._redis.pipeline(transaction=True)
        pipe.xtrim(key, minid=keep_from, approximate=False)
        meta = keys.log_meta(task_id)
        pipe.hincrby(meta, "bytes", -freed)
        pipe.hincrby(meta, "trimmed_lines", lines)
        pipe.hincrby(meta, "trimmed_bytes", freed)
        pipe.hset(meta, "cap", self.cap_bytes)  # a reader's own cap may differ from the agent's
        pipe.execute()

    def _marked(self, task_id: str) -> bool:
        return bool(self._redis.hexists(keys.log_meta(task_id), "marked"))

    def trimmed(self, task_id: str) -> tuple[int, int, int]:
        """The lines and bytes trimmed from the head of the task's log, and the cap in bytes
        that it was trimmed to keep under."""
        meta = self._redis.hmget(keys.log_meta(task_id), ["trimmed_lines", "trimmed_bytes", "cap"])
        return int(meta[0] or 0), int(meta[1] or 0), int(meta[2] or self.cap_bytes)

    def trimmed_text(self, task_id: str) -> str | None:
        """What was trimmed, in words ("1200 earlier lines (3.1 MB) were trimmed to keep this
        log under 50 MB"); None when nothing was."""
        lines, size, cap = self.trimmed(task_id)
        if lines <= 0:
            return None
        return (
            f"{lines} earlier lines ({format_bytes(size)}) were trimmed to keep this log under "
            f"{format_bytes(cap)}"
        )

    def _marker(self, task_id: str, first: LogEntry | None) -> LogEntry | None:
        text = self.trimmed_text(task_id)
        if text is None:
            return None
        return LogEntry(
            id="0-0",
            time=first.time if first else time.time(),
            line=f"[overnight: {text}]",
            marker=True,
        )

    def read(self, task_id: str, *, after: str = "0", count: int | None = None) -> list[LogEntry]:
        """Entries after the entry id ``after`` ("0": from the start, with the trim marker if any)."""
        start = "-" if after in ("0", "0-0") else f"({after}"
        raw = self._redis.xrange(keys.log(task_id), min=start, count=count)
        entries = _entries(raw, self._marked(task_id))
        if after in ("0", "0-0"):
            marker = self._marker(task_id, entries[0] if entries else None)
            if marker is not None:
                entries.insert(0, marker)
        return entries

    def tail(self, task_id: str, lines: int) -> list[LogEntry]:
        """The last ``lines`` entries, with the trim marker when they reach the head of the log."""
        raw = self._redis.xrevrange(keys.log(task_id), count=lines) if lines > 0 else []
        entries = _entries(raw, self._marked(task_id))[::-1]
        if len(entries) < lines:
            marker = self._marker(task_id, entries[0] if entries else None)
            if marker is not None:
                entries.insert(0, marker)
        return entries

    def follow(
        self,
        task_id: str,
        *,
        until: Callable[[], bool],
        after: str = "0",
        block: float = 1.0,
    ) -> Iterator[LogEntry]:
        """Entries as they arrive (XREAD BLOCK), ending once ``until()`` is true and the log is drained.

        ``until`` is asked after every read that returned nothing new, so the stream ends within
        about ``block`` seconds of the task reaching a final status.
        """
        last = after
        for entry in self.read(task_id, after=after):
            if not entry.marker:
                last = entry.id
            yield entry
        key = keys.log(task_id)
        marked = self._marked(task_id)
        done = until()  # a task that already ended: drain what is left and stop, without waiting
        if done:
            block = 0.001
        while True:
            reply: Any = self._redis.xread(
                {key: last}, count=_TRIM_CHUNK, block=max(1, int(block * 1000))
            )
            if reply and not marked:  # a log that began while we waited
                marked = self._marked(task_id)
            entries = [e for _, items in (reply or []) for e in _entries(items, marked)]
            for entry in entries:
                last = entry.id
                yield entry
            if entries:
                continue
            if done:
                return
            if until():
                done = True  # one more read: lines written just before the final status
                block = 0.001

    def size(self, task_id: str) -> int:
        """Bytes of text currently held for a task."""
        value = self._redis.hget(keys.log_meta(task_id), "bytes")
        return int(value) if value is not None else 0

    def delete(self, task_id: str) -> None:
        self._redis.delete(keys.log(task_id), keys.log_meta(task_id))


def _raw_entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """Stream entries as (id, fields) with a str id, from XRANGE-style replies."""
    return [(replies.text(entry_id), dict(fields or {})) for entry_id, fields in (reply or [])]


def _entries(reply: Any, marked: bool) -> list[LogEntry]:
    """Entries of an XRANGE-style reply; ``marked``: the log tells the agent's lines by ``by``."""
    out = []
    for entry_id, fields in _raw_entries(reply):
        try:
            stamp = float(fields.get(b"t", b"0"))
        except ValueError:
            stamp = 0.0
        line = fields.get(b"line", b"").decode("utf-8", "replace")
        agent = fields.get(b"by") == b"agent" if marked else line.startswith(AGENT_PREFIX)
        out.append(LogEntry(id=entry_id, time=stamp, line=line, agent=agent))
    return out
