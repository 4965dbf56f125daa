"""The agent's housekeeping thread: cancel requests, heartbeats, lost tasks, log backlogs.

One thread per agent looks after every task the agent holds, so task threads only run their
task. Each tick it turns cancel requests into stop flags; every ``heartbeat_interval`` it renews
the tasks' heartbeats (the store's, RQ's executions) and the agent's registrations; every
``reap_interval`` it marks other agents' silent tasks lost (``reap_lost``); every
``report_interval`` it writes each running task's resource report so far to its record, so
``overnight show`` has peak and mean during the run and a task whose agent dies keeps them; every
``stray_interval`` it stops the task processes on this host whose agent died (another agent
sharing the workspace folder, never restarted) and marks their tasks lost; every ``reap_interval``
it also steps the ``overnight optimize --detach`` studies it may drive. Each tick it also tells
the events waiting in Redis (a sweep's end, an agent lost: :mod:`overnight.notify.notifier`) and
sends the digest when its slot is due. A Redis outage pauses all this with backoff; the tasks
keep running meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from overnight.agent.config import AgentConfig
from overnight.agent.run.task import ActiveTask
from overnight.agent.service.reconnect import CONNECTION_ERRORS, Backoff
from overnight.agent.service.rqworker import AgentWorker
from overnight.notify.digest import Digest
from overnight.notify.notifier import Notifier
from overnight.optimize.detached import DetachedDrivers
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.heartbeats import renew_heartbeat
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)


class Control:
    """Runs :meth:`tick` every ``control_interval`` seconds in a thread until :meth:`stop`."""

    def __init__(
        self,
        config: AgentConfig,
        store: TaskStore,
        worker: AgentWorker,
        registry: AgentRegistry,
        *,
        tasks: Callable[[], list[ActiveTask]],
        info: Callable[[], AgentInfo],
        strays: Callable[[], object] | None = None,
        notifier: Notifier | None = None,
        digest: Digest | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.digest = digest
        self.store = store
        self.worker = worker
        self.registry = registry
        self._tasks = tasks
        self._info = info
        self._stop = threading.Event()
        self._backoff = Backoff(longest=config.max_backoff)
        self._next_beat = 0.0
        self._next_reap = 0.0
        self._next_report = time.monotonic() + config.report_interval
        self._strays = strays
        self._next_strays = time.monotonic() + config.stray_interval  # the start just looked
        self._studies = DetachedDrivers(store, config.redis_url, worker.name, ttl=config.lost_ttl)
        self._apart: dict[str, threading.Thread] = {}
        self._thread = threading.Thread(target=self._run, name="overnight-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        studies = self._apart.get("studies")
        if studies is not None:
            studies.join(timeout=30)
        with contextlib.suppress(*CONNECTION_ERRORS):  # Redis away: the leases expire
            self._studies.close()

    def beat_soon(self) -> None:
        """Renew heartbeats at the next tick (a task was just claimed or ended)."""
        self._next_beat = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except CONNECTION_ERRORS as exc:
                if self._backoff.wait(exc, self._stop):
                    return
                continue
            except Exception:  # a bug here must not end the housekeeping for good
                log.exception("agent housekeeping failed; trying again")
            else:
                self._backoff.reset()
            self._stop.wait(self.config.control_interval)

    def tick(self) -> None:
        """One round of housekeeping; raises a connection error when Redis is away."""
        tasks = self._tasks()
        for task in tasks:
            if not task.canceled.is_set() and self.store.cancel_requested(task.task_id):
                task.sink.line("[overnight] cancel requested; stopping the task")
                task.canceled.set()
        now = time.monotonic()
        if now >= self._next_beat:
            # Our own heartbeats first: after an outage, reaping must not take our tasks.
            for task in tasks:
                why = renew_heartbeat(
                    self.store,
                    task.task_id,
                    self.worker.name,
                    task.record.attempt,
                    ttl=self.config.lost_ttl,
                )
                if why is not None and not task.ended.is_set():  # its end is being written
                    task.take_away(self.worker.name, why)
            info = self._info()
            self.worker.heartbeat("busy" if tasks else "idle")
            self.registry.heartbeat(info, ttl=self._registry_ttl)
            self._next_beat = now + self.config.heartbeat_interval
        for task in tasks:
            task.sink.flush(force=False)
        if now >= self._next_report:
            self._next_report = now + self.config.report_interval  # a failure waits its turn
            self.write_reports(tasks)
        if now >= self._next_reap:
            lost = reap_lost(self.store, settle=self.config.lost_ttl + self.config.max_backoff)
            if lost:
                log.warning("marked lost (their agent went silent): %s", ", ".join(lost))
            self.worker.maintain()
            self._next_reap = now + self.config.reap_interval
            self._run_apart("studies", self._studies.tick, "driving detached studies")
        self._tell()
        if self._strays is not None and now >= self._next_strays:
            self._next_strays = now + self.config.stray_interval
            self._run_apart("strays", self._strays, "looking for task processes of dead agents")

    def _tell(self) -> None:
        """Tell the events waiting to be told, and the digest when its slot is due; a bug here
        costs the word, never the rest of the housekeeping."""
        try:
            if self.notifier is not None:
                self.notifier.drain()
            if self.digest is not None:
                self.digest.tick()
        except CONNECTION_ERRORS:
            raise
        except Exception:
            log.exception("telling events failed; trying again at the next tick")

    def _run_apart(self, name: str, work: Callable[[], object], what: str) -> None:
        """Run ``work`` in a thread of its own (stopping a group of strays waits for it to end;
        a study's step may import Optuna), one at a time for each ``name``."""
        running = self._apart.get(name)
        if running is not None and running.is_alive():
            return

        def look() -> None:
            try:
                work()
            except Exception:  # Redis away, a process that vanished: the next round retries
                log.exception("%s failed", what)

        thread = threading.Thread(target=look, name=f"overnight-{name}", daemon=True)
        self._apart[name] = thread
        thread.start()

    def write_reports(self, tasks: list[ActiveTask]) -> None:
        """Store the resource report and the metrics so far of every task that is running."""
        for task in tasks:
            if task.metrics is not None:
                task.metrics.write(
                    self.store, task.task_id, agent=self.worker.name, expect={TaskStatus.RUNNING}
                )
            report = task.monitor.report() if task.monitor is not None else None
            if report is None or not report["summary"]:
                continue
            self.store.update_extra(
                task.task_id,
                {"resources": report},
                expect={TaskStatus.RUNNING},
                agent=self.worker.name,
            )

    @property
    def _registry_ttl(self) -> float:
        return max(3 * self.config.heartbeat_interval, self.config.lost_ttl)
