"""A task this agent took, from its claim to its final status: what every part of the agent that
looks after it (its pipeline, the housekeeping thread, adoption) shares about it."""

from __future__ import annotations

import dataclasses
import logging
import threading

from overnight.agent.environments.base import Process
from overnight.agent.run.logsink import LogSink
from overnight.agent.run.metricfeed import MetricFeed
from overnight.agent.run.monitor import Monitor
from overnight.agent.run.outputs import OutputCollector
from overnight.queue.records import TaskRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ActiveTask:
    """A task this agent took, from its claim to its final status."""

    record: TaskRecord
    gpu_ids: tuple[str, ...]
    sink: LogSink
    canceled: threading.Event = dataclasses.field(default_factory=threading.Event)
    evicted: threading.Event = dataclasses.field(default_factory=threading.Event)  # agent stops
    taken: threading.Event = dataclasses.field(default_factory=threading.Event)  # not ours now
    ended: threading.Event = dataclasses.field(default_factory=threading.Event)  # being recorded
    taken_why: str = ""
    evicted_why: str = ""  # why the agent stops it, when not for its own shutdown
    process: Process | None = None  # once started
    monitor: Monitor | None = None  # while it runs
    outputs: OutputCollector | None = None  # once its tree is there
    metrics: MetricFeed | None = None  # once its tree is there

    @property
    def task_id(self) -> str:
        return self.record.id

    def should_stop(self) -> bool:
        return self.canceled.is_set() or self.evicted.is_set() or self.taken.is_set()

    def evict(self, why: str) -> None:
        """Stop the run (SIGTERM, grace, SIGKILL) and requeue the task at the front: ``why``."""
        if self.evicted.is_set():
            return
        self.evicted_why = why
        self.evicted.set()
        self.sink.line(f"[overnight] stopping this run: {why}; it goes back to the front")

    def take_away(self, agent: str, why: str) -> None:
        """The task is no longer this run's (declared lost, or canceled, while its heartbeats
        lapsed): stop the run and record nothing of it."""
        if self.taken.is_set():
            return
        self.taken_why = (
            f"agent {agent}'s heartbeats of this run (attempt {self.record.attempt + 1}) "
            f"lapsed, and the task went on without it: {why}"
        )
        self.taken.set()
        self.sink.line(f"[overnight] stopping this run: {self.taken_why}")
        log.warning("task %s: stopping its run here: %s", self.task_id, self.taken_why)
