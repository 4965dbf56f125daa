"""MetricFeed: what one run reports as metrics, read while it runs and written to its record.

The supervisor's reader hands every batch of the task's output to :meth:`MetricFeed.observe`
(the agent's own notices left out, lines sent in pieces put together again:
:mod:`overnight.metrics.stream`); the files the task declared with ``--metrics`` are polled every
``poll_interval`` seconds on a thread of its own (:mod:`overnight.metrics.files`). The agent's
housekeeping writes the summaries and series to the record every report interval, when they
changed (:meth:`MetricFeed.write`), and the pipeline writes them once more at the end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence

from overnight.agent.run.logbatch import Line, LineEnd, Notice, Partial
from overnight.metrics.files import MetricFiles
from overnight.metrics.stream import MetricStream
from overnight.metrics.tracker import MetricTracker
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)


class MetricFeed:
    """One run's metrics: its output lines and metrics files into one tracker."""

    def __init__(
        self,
        tracker: MetricTracker,
        files: MetricFiles | None = None,
        *,
        poll_interval: float = 5.0,
    ) -> None:
        self.tracker = tracker
        self.stream = MetricStream(tracker)
        self.files = files
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = 0  # the tracker's version last written

    def observe(self, lines: Sequence[Line]) -> None:
        """A batch of the task's output, in order; never raises."""
        try:
            for _, text in lines:
                if isinstance(text, Notice):
                    continue
                if isinstance(text, Partial):
                    self.stream.piece(text)
                elif isinstance(text, LineEnd):
                    self.stream.end(text)
                else:
                    self.stream.line(text)
        except Exception:  # a bug here must cost the metrics, never the task's log
            log.exception("metrics not read from a batch of output")

    def start(self) -> MetricFeed:
        if self.files is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="overnight-metrics", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """The run ended: read the files' last lines and the output's unfinished one."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.files is not None:
            self.files.poll(final=True)
        self.stream.close()

    def _run(self) -> None:
        assert self.files is not None
        while not self._stop.wait(self._poll_interval):
            self.files.poll()

    def write(
        self, store: TaskStore, task_id: str, *, agent: str, expect: Collection[TaskStatus]
    ) -> bool:
        """Write the summaries and series to the record if they changed since the last write;
        False when the record is not this run's any more (nothing written)."""
        version = self.tracker.version
        if version == self._written:
            return True
        written = store.update_metrics(
            task_id,
            self.tracker.summaries(),
            self.tracker.series(),
            expect=expect,
            agent=agent,
        )
        if written:
            self._written = version
        return written
