"""Raw output bytes to timestamped log lines, batched for the task's log.

:class:`LineAssembler` decodes the stream (invalid UTF-8 replaced, characters split across
chunks kept whole), collapses carriage-return rewrites to the last text shown and splits lines
too long to store. :class:`LogBatcher` decides when a batch must go out: when its oldest
content has waited ``flush_interval`` seconds or it holds ``flush_bytes`` (the runner also sends
complete lines at once whenever its sink is idle). A line still being written (a progress bar,
a prompt) goes out as it stands when its turn comes, so progress is visible.
"""

from __future__ import annotations

import codecs

Line = tuple[float, str]
"""A log line: (unix time, text without the newline)."""


class Notice(str):
    """A line the agent puts among the task's output (``[overnight] 12 log lines dropped``):
    stored as the agent's, where the other lines of a batch are the task's."""

    __slots__ = ()


class Output(str):
    """Text a tool wrote (a build's output) passed to :meth:`overnight.agent.run.logsink.LogSink.line`:
    stored as output, not as the agent's own line."""

    __slots__ = ()


class Partial(str):
    """The start or the middle of a task's line sent before its end came (a progress bar, output
    cut by a flush, a line too long to store whole); the rest follows, ended by a :class:`LineEnd`
    (or by nothing when the line ended right after it). Readers of whole lines (metrics) put
    the pieces together again."""

    __slots__ = ()


class LineEnd(str):
    """The last piece of a line that went out in :class:`Partial` pieces."""

    __slots__ = ()


MAX_LINE = 16 * 1024
"""Longest line stored, in characters; longer ones are split into several lines."""


class LineAssembler:
    """Turns chunks of bytes into complete lines; pure logic, the caller supplies the time."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self._max = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._cur = ""  # text written since the last carriage return
        self._prev = ""  # the last non-empty text before it, still shown if nothing replaces it
        self._continued = False  # the line's start already went out as a partial line
        self._pieced = False  # a piece of the line went out (partial, or split for its length)
        self.since: float | None = None  # when the pending partial line got its first text
        self._updated = 0.0

    @property
    def partial(self) -> str:
        """The text of the line being written, as a terminal would show it now."""
        return self._cur or self._prev

    def feed(self, data: bytes, now: float) -> list[Line]:
        """Add output; return the lines it completed."""
        out: list[Line] = []
        self._add_text(self._decoder.decode(data), now, out)
        return out

    def take_partial(self, now: float) -> Line | None:
        """Hand out the line being written as it stands; later text starts a new line."""
        text = self.partial
        if not text:
            return None
        self._reset()
        self._continued = self._pieced = True
        return (self._updated, Partial(text))

    def finish(self, now: float) -> list[Line]:
        """The end of the stream: the remaining bytes and the unterminated last line."""
        out: list[Line] = []
        self._add_text(self._decoder.decode(b"", final=True), now, out)
        last = self.take_partial(now)
        if last is not None:
            out.append(last)
        return out

    def _add_text(self, text: str, now: float, out: list[Line]) -> None:
        if not text:
            return
        pieces = text.split("\n")
        for index, piece in enumerate(pieces):
            if piece:
                self._add_piece(piece, now, out)
            if index < len(pieces) - 1:
                self._end_line(now, out)

    def _add_piece(self, piece: str, now: float, out: list[Line]) -> None:
        segments = piece.split("\r")
        self._append(segments[0], now, out)
        for segment in segments[1:]:
            if self._cur:
                self._prev = self._cur
            self._cur = ""
            self._append(segment, now, out)

    def _append(self, segment: str, now: float, out: list[Line]) -> None:
        if not segment:
            return
        if self.since is None:
            self.since = now
        self._updated = now
        self._cur += segment
        while len(self._cur) > self._max:
            out.append((now, Partial(self._cur[: self._max])))
            self._cur = self._cur[self._max :]
            self._prev = ""
            self._pieced = True

    def _end_line(self, now: float, out: list[Line]) -> None:
        text = self.partial
        # A newline right after a partial line went out only ends that line; no empty line.
        if text or not self._continued:
            out.append((now, LineEnd(text) if self._pieced else text))
        self._reset()

    def _reset(self) -> None:
        self._cur = ""
        self._prev = ""
        self._continued = False
        self._pieced = False
        self.since = None


class LogBatcher:
    """Collects lines and says when a batch is due; pure logic, the caller supplies the time.

    ``partial_min_age`` keeps a line that is being written right now (its first text came less
    than that long ago) from being cut in two by a flush that other lines made due.
    """

    def __init__(
        self,
        *,
        flush_interval: float = 0.5,
        flush_bytes: int = 64 * 1024,
        max_line: int = MAX_LINE,
        partial_min_age: float = 0.05,
    ) -> None:
        self.flush_interval = flush_interval
        self.flush_bytes = flush_bytes
        self.partial_min_age = partial_min_age
        self._assembler = LineAssembler(max_line)
        self._lines: list[Line] = []
        self._size = 0  # characters pending, newlines counted

    def feed(self, data: bytes, now: float) -> None:
        for line in self._assembler.feed(data, now):
            self._lines.append(line)
            self._size += len(line[1]) + 1

    def deadline(self) -> float | None:
        """When the pending content must go out, or None when nothing is pending."""
        oldest = self._lines[0][0] if self._lines else None
        since = self._assembler.since
        if since is not None and (oldest is None or since < oldest):
            oldest = since
        return None if oldest is None else oldest + self.flush_interval

    def due(self, now: float) -> bool:
        if self._size >= self.flush_bytes:
            return True
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    @property
    def has_lines(self) -> bool:
        """Whether complete lines are pending (the line being written aside)."""
        return bool(self._lines)

    def flush(self, now: float, *, partial: bool = True) -> list[Line]:
        """The pending lines, with the line being written unless it has only just begun."""
        since = self._assembler.since
        if partial and since is not None and now - since >= self.partial_min_age:
            line = self._assembler.take_partial(now)
            if line is not None:
                self._lines.append(line)
        return self._take()

    def close(self, now: float) -> list[Line]:
        """Everything left, at the end of the stream."""
        self._lines.extend(self._assembler.finish(now))
        return self._take()

    def _take(self) -> list[Line]:
        lines, self._lines, self._size = self._lines, [], 0
        return lines
