"""MetricStream: a run's output lines, in order, read for metrics into a tracker.

Two things need the order of the lines and so live here, not in the line parser:

- the step carries over: a line that gives only a step (``step: 10``, as Guild has it) is the
  step of the metrics on later lines without one, until the next step;
- a line the agent sent in pieces (its end came later than a log flush: block-buffered output,
  a slow writer) is put together again before it is read, so ``loss: 0.1`` then ``234`` reads as
  ``loss: 0.1234``, never as ``loss: 0.1``. A line that grows past the parser's bound while in
  pieces is passed over whole.
"""

from __future__ import annotations

from overnight.metrics.parse import MAX_LINE, parse_line
from overnight.metrics.tracker import MetricTracker


class MetricStream:
    """Feeds one run's output lines to ``tracker``; never raises on any text."""

    def __init__(self, tracker: MetricTracker) -> None:
        self.tracker = tracker
        self.step: float | None = None
        self._pieces: list[str] = []
        self._pieces_size = 0
        self._too_long = False

    def line(self, text: str) -> None:
        """A whole line."""
        self._flush()
        self._read(text)

    def piece(self, text: str) -> None:
        """The start or the middle of a line whose end is still to come."""
        if not self._too_long:
            self._pieces.append(text)
            self._pieces_size += len(text)
            if self._pieces_size > MAX_LINE:
                self._pieces, self._pieces_size, self._too_long = [], 0, True

    def end(self, text: str) -> None:
        """The end of the line the last pieces began."""
        if self._pieces or self._too_long:
            self.piece(text)
            text = "" if self._too_long else "".join(self._pieces)
            self._pieces, self._pieces_size, self._too_long = [], 0, False
        self._read(text)

    def close(self) -> None:
        """The output ended: a line left in pieces is read as it stands."""
        self._flush()

    def _flush(self) -> None:
        if self._pieces or self._too_long:
            self.end("")

    def _read(self, text: str) -> None:
        reading = parse_line(text)
        if reading is None:
            return
        if reading.step is not None:
            self.step = reading.step
        self.tracker.add(reading, self.step)
