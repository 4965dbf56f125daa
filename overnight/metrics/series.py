"""MetricSeries: the bounded history of one metric, thinned evenly as it grows.

Points are ``(seconds since the run started, step or None, value)``. The series keeps every
``stride``-th value, doubling the stride (dropping every other kept point) whenever it would pass
its bound, so a long run keeps its whole shape at an even resolution; the first, last, lowest and
highest values are always among the points, so a plot shows the extremes the summary names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MAX_POINTS = 1000
"""Points one metric's series holds at most."""

Point = tuple[float, float | None, float]


class MetricSeries:
    """At most ``max_points`` points of one metric; feed it with :meth:`add`."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max(4, max_points)
        self._kept: list[tuple[int, Point]] = []  # (value number, point), every stride-th
        self._stride = 1
        self._seen = 0
        self._last: tuple[int, Point] | None = None
        self._low: tuple[int, Point] | None = None
        self._high: tuple[int, Point] | None = None

    def add(self, seconds: float, step: float | None, value: float) -> None:
        numbered = (self._seen, (seconds, step, value))
        if self._seen % self._stride == 0:
            self._kept.append(numbered)
            if len(self._kept) > self.max_points - 3:  # room for the last, lowest and highest
                self._stride *= 2
                self._kept = [p for p in self._kept if p[0] % self._stride == 0]
        if self._low is None or value < self._low[1][2]:
            self._low = numbered
        if self._high is None or value > self._high[1][2]:
            self._high = numbered
        self._last = numbered
        self._seen += 1

    @property
    def seen(self) -> int:
        """Values added so far, kept or not."""
        return self._seen

    def points(self) -> list[Point]:
        """The kept points, oldest first, with the last, lowest and highest among them."""
        extra = [p for p in (self._last, self._low, self._high) if p is not None]
        merged = dict(self._kept)
        merged.update(extra)
        return [merged[n] for n in sorted(merged)]

    def to_json(self) -> list[list[float | None]]:
        """Compact JSON points: seconds to 0.1 s, the step and the value as they are."""
        return [[round(at, 1), step, value] for at, step, value in self.points()]

    @classmethod
    def from_json(cls, points: Any, max_points: int = MAX_POINTS) -> MetricSeries:
        """A series that goes on from stored points (an agent that restarted mid-run); points
        that are malformed are passed over."""
        series = cls(max_points)
        if isinstance(points, Sequence):
            for point in points:
                parsed = _point(point)
                if parsed is not None:
                    series.add(*parsed)
        return series


def _point(raw: Any) -> Point | None:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) != 3:
        return None
    at, step, value = raw
    numbers = [at, value] + ([] if step is None else [step])
    if any(isinstance(n, bool) or not isinstance(n, (int, float)) for n in numbers):
        return None
    if not all(math.isfinite(n) for n in numbers):
        return None
    return float(at), None if step is None else float(step), float(value)
