"""MetricTracker: one run's metrics as they come, a summary and a series per name, bounded.

The run's output lines and its metrics files feed one tracker (from their own threads); the
agent's reports read it. At most ``max_names`` names are kept: values of later names are
counted in :attr:`MetricTracker.ignored` and otherwise passed over, so a task that prints a
new name on every line costs bounded memory and a bounded record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from overnight.metrics.parse import Reading
from overnight.metrics.series import MAX_POINTS, MetricSeries
from overnight.metrics.summary import MetricSummary

MAX_NAMES = 100
"""Distinct metric names one task keeps at most."""


class MetricTracker:
    """Summaries and series of one run's metrics; safe to feed and read from several threads."""

    def __init__(
        self,
        *,
        max_names: int = MAX_NAMES,
        max_points: int = MAX_POINTS,
        clock: Callable[[], float] = time.time,
        started: float | None = None,
    ) -> None:
        self.max_names = max_names
        self._max_points = max_points
        self._clock = clock
        self.started = clock() if started is None else started
        self._summaries: dict[str, MetricSummary] = {}
        self._series: dict[str, MetricSeries] = {}
        self._lock = threading.Lock()
        self.version = 0  # grows with every value taken: a report writes only what is new
        self.ignored = 0  # values of names past max_names

    def resume(self, summaries: Mapping[str, MetricSummary], series: Mapping[str, Any]) -> None:
        """Go on from what an earlier agent of this run recorded (it restarted mid-run)."""
        with self._lock:
            for name, summary in list(summaries.items())[: self.max_names]:
                self._summaries[name] = summary
                self._series[name] = MetricSeries.from_json(series.get(name), self._max_points)

    def add(self, reading: Reading, step: float | None = None) -> None:
        """Take a line's or a row's metrics, at its step (else at ``step``)."""
        if not reading.values:
            return
        at = self._clock() - self.started
        use = reading.step if reading.step is not None else step
        with self._lock:
            for name, value in reading.values:
                summary = self._summaries.get(name)
                if summary is None:
                    if len(self._summaries) >= self.max_names:
                        self.ignored += 1
                        continue
                    self._summaries[name] = MetricSummary.first(value, use)
                    self._series[name] = MetricSeries(self._max_points)
                else:
                    self._summaries[name] = summary.updated(value, use)
                self._series[name].add(at, use, value)
                self.version += 1

    def summaries(self) -> dict[str, MetricSummary]:
        with self._lock:
            return dict(self._summaries)

    def series(self) -> dict[str, list[list[float | None]]]:
        """Per name, the JSON points of its series (:meth:`MetricSeries.to_json`)."""
        with self._lock:
            return {name: s.to_json() for name, s in self._series.items()}
