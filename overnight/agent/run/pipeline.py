"""One task on an agent, from ``preparing`` to its final status.

The daemon has already claimed the task (``preparing``, with its GPUs). The pipeline then
rebuilds the working tree (:class:`~overnight.agent.workspace.workspaces.Workspaces`), prepares the
environment, moves the task to ``running``, supervises the command and records how it ended.
Every failure becomes ``failed`` with the phase it happened in and a one-line error; the
pipeline itself never raises, so the agent goes on serving. Status writes wait out Redis
outages; the log sink holds lines meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overnight.agent.config import AgentConfig
from overnight.agent.environments.base import Environment, Prepared, Process, RunRequest
from overnight.agent.gpus.hardware import hardware_info
from overnight.agent.gpus.inventory import FakeInventory, GPUInventory
from overnight.agent.run.metricfeed import MetricFeed
from overnight.agent.run.monitor import GPUProbe, GPUSampler, Monitor, Sampler
from overnight.agent.run.outputs import OUTPUT_DIR, OutputCollector, PeriodicSync
from overnight.agent.run.supervisor import CANCELED, TIMED_OUT, RunOutcome, supervise
from overnight.agent.run.task import ActiveTask
from overnight.agent.service.hostfaults import FaultHold, host_fault
from overnight.agent.service.reconnect import Backoff, until_connected
from overnight.agent.workspace.workspaces import Workspaces
from overnight.errors import (
    CorruptRecord,
    EnvironmentBuildError,
    InstallError,
    InvalidTransition,
    OvernightError,
    ReconstructError,
    SpecError,
    TaskNotFound,
    TaskRunError,
)
from overnight.metrics.files import MetricFiles
from overnight.metrics.tracker import MetricTracker
from overnight.notify.notifier import Notifier
from overnight.outputs.redisstore import RedisOutputStore
from overnight.outputs.store import OutputStore
from overnight.queue.failures import FailureKind, kind_of_phase, retried
from overnight.queue.records import ACTIVE_STATUSES, FAILED_ON, Change, Phase, TaskStatus
from overnight.queue.store import TaskStore
from overnight.spec import Snapshot, TaskSpec
from overnight.units import format_duration

log = logging.getLogger(__name__)

_POLITE = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SHUTDOWN_EXITS = frozenset({-s for s in _POLITE} | {128 + s for s in _POLITE})
"""Exit codes of a command a service manager or a shell stopped (128 + n: through a shell)."""
MAX_HOST_FAULTS = 3
"""Host faults (a full disk) a task may meet before it fails instead of going back again."""
STOP_SIGNAL_WAIT = 0.5
"""Seconds a failure waits for the agent's own stop signal: systemd signals all at once."""
FIRST_SAMPLE = 1.0  # seconds from a task's start to its first resource sample, at most
_PHASE_OF: tuple[tuple[type[OvernightError], Phase], ...] = (
    (ReconstructError, Phase.WORKSPACE),
    (EnvironmentBuildError, Phase.ENVIRONMENT),
    (TaskRunError, Phase.RUN),
    (SpecError, Phase.AGENT),
    (CorruptRecord, Phase.AGENT),
)


@dataclasses.dataclass(frozen=True)
class Ending:
    """How a task ended on this agent, before it is written to its record."""

    status: TaskStatus  # finished, failed, canceled; queued: hand it back (agent stopping)
    phase: Phase | None = None
    error: str | None = None
    exit_code: int | None = None
    note: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    recorded: bool = True  # False: the record moved on without us (declared lost meanwhile)
    host_faults: int = 0  # queued after a host fault: how many the task has met so far
    failure: FailureKind | None = None  # failed: whose fault, where the phase does not say

    @property
    def kind(self) -> FailureKind | None:
        """A failed ending's kind: its own, else its phase's (queue.failures)."""
        if self.status is not TaskStatus.FAILED:
            return None
        return self.failure or kind_of_phase(self.phase.value if self.phase else None)


class Pipeline:
    """Prepares and runs tasks; one instance per agent, used by all its task threads."""

    def __init__(
        self,
        config: AgentConfig,
        store: TaskStore,
        workspaces: Workspaces,
        environment: Environment,
        *,
        agent_name: str,
        inventory: GPUInventory | None = None,
        outputs: OutputStore | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.store = store
        self.workspaces = workspaces
        self.environment = environment
        self.agent = agent_name
        self.inventory = inventory or FakeInventory()
        self.outputs = outputs or RedisOutputStore(store.redis)
        self.gpu_probe = GPUProbe(self.inventory, warn=log.warning)
        self.stopping = threading.Event()  # the agent was asked to stop (drain or evict)
        self.hold = FaultHold(config.fault_pause)  # no new tasks for a while after a host fault

    def run(self, task: ActiveTask) -> Ending:
        """Run ``task`` to its end and record it; never raises."""
        return self._guarded(task, lambda: self._execute(task))

    def resume(self, task: ActiveTask, process: Process) -> Ending:
        """Supervise a task's process found running after an agent restart, and record it."""
        record = task.record
        timeout = record.options.timeout
        if timeout is not None and record.started is not None:
            timeout = max(0.0, timeout - (time.time() - record.started))

        def watch() -> Ending:
            snapshot = self._retry(lambda: self.store.load_snapshot(task.task_id))
            if snapshot is not None:
                tree = self.workspaces.task_dir(task.task_id)
                self._collect_outputs(task, tree, snapshot.spec)
                self._read_metrics(task, tree, snapshot.spec, resumed=True)
            outcome, resources = self._supervise(task, process, timeout)
            return self._ended(task, outcome, {"resources": resources})

        return self._guarded(task, watch)

    def _guarded(self, task: ActiveTask, work: Callable[[], Ending]) -> Ending:
        try:
            ending = work()
        except Exception as exc:  # a bug must cost one task, not the agent
            log.error("task %s: agent error\n%s", task.task_id, traceback.format_exc())
            ending = Ending(
                TaskStatus.FAILED, Phase.AGENT, f"agent error: {type(exc).__name__}: {exc}"
            )
        self._record(task, ending)
        return ending

    # -- preparing and running ----------------------------------------------------------------

    def _execute(self, task: ActiveTask) -> Ending:
        say = task.sink.line
        phase = Phase.WORKSPACE
        extra: dict[str, Any] = {}
        try:
            snapshot = self._retry(lambda: self.store.load_snapshot(task.task_id))
            if snapshot is None or task.should_stop():
                return self._stopped(task, phase)
            attempt, retries = task.record.attempt, task.record.options.retries
            if attempt or retries:  # a retried task's log holds each attempt after the last
                say(f"[overnight] attempt {attempt + 1} of {retries + 1} starts here")
            say(f"[overnight] agent {self.agent}: rebuilding the working tree")
            workspace = self.workspaces.create(task.task_id, snapshot, say, task.should_stop)
            if task.should_stop():
                return self._stopped(task, phase)
            self._collect_outputs(task, workspace, snapshot.spec)
            self._read_metrics(task, workspace, snapshot.spec)
            resumed = self._restore_outputs(task)
            phase = Phase.ENVIRONMENT
            say(f"[overnight] preparing the {self.environment.name} environment")
            prepared = self.environment.prepare(
                snapshot.spec, task.sink.line, task.should_stop, image=task.record.options.image
            )
            extra["environment"] = self.environment.describe(prepared)
            self._warn(task, prepared)
            if task.should_stop():
                return self._stopped(task, phase, extra)
            phase = Phase.RUN
            extra["hardware"] = hardware_info(self.inventory, gpu_ids=task.gpu_ids)
            self._retry(
                lambda: self.store.transition(
                    task.task_id,
                    TaskStatus.RUNNING,
                    Change(extra=extra),
                    expect={TaskStatus.PREPARING},
                    held_by=self.agent,
                    heartbeat_ttl=self.config.lost_ttl,
                )
            )
            request = self._request(task, snapshot, workspace, resumed=resumed)
            process = self.environment.start(prepared, request)
            outcome, resources = self._supervise(task, process, task.record.options.timeout)
            extra["resources"] = resources
        except InvalidTransition as exc:  # declared lost while Redis was away, and requeued
            log.warning("task %s: %s; leaving it alone", task.task_id, exc)
            return Ending(TaskStatus.FAILED, Phase.AGENT, str(exc), recorded=False)
        except OvernightError as exc:
            if task.should_stop() or self._shutting_down():
                return self._stopped(task, phase, extra)
            phase = next((p for cls, p in _PHASE_OF if isinstance(exc, cls)), phase)
            fault = host_fault(exc)  # the run's own exit is no OvernightError: never one
            if fault is not None:
                return self._host_fault(task, fault, phase, exc)
            if isinstance(exc, InstallError):  # `retry` says a retry meets it again
                extra[FAILED_ON] = "requirements"
            kind = FailureKind.SETUP if isinstance(exc, (SpecError, CorruptRecord)) else None
            return Ending(TaskStatus.FAILED, phase, _one_line(exc), extra=extra, failure=kind)
        return self._ended(task, outcome, extra)

    def _supervise(
        self, task: ActiveTask, process: Process, timeout: float | None
    ) -> tuple[RunOutcome, dict[str, Any]]:
        """Stream, watch and stop the process; returns how it ended and its resource report."""
        task.process = process
        task.monitor = monitor = Monitor(
            self._samplers(task, process),
            interval=self.config.monitor_interval,
            warn=lambda message: task.sink.line(f"[overnight] warning: {message}"),
        )
        # Sampling starts a moment later: a process just started is only its interpreter loading,
        # and a task over by then is not worth reading every process on the host for.
        starter = threading.Timer(min(self.config.monitor_interval, FIRST_SAMPLE), monitor.start)
        starter.daemon = True
        starter.start()
        syncing = None
        if task.outputs is not None:
            syncing = PeriodicSync(task.outputs.sync, self.config.output_sync_interval)
            syncing.start()
        metrics = task.metrics.start() if task.metrics is not None else None
        try:
            outcome = supervise(
                process,
                task.sink,
                should_stop=task.should_stop,
                timeout=timeout,
                grace=self._grace(task),
                observe=metrics.observe if metrics is not None else None,
            )
        finally:
            starter.cancel()
            starter.join()  # a start under way has finished: stop() then sees its thread
            monitor.stop()
            if syncing is not None:
                syncing.stop()
            if metrics is not None:
                metrics.stop()
        return outcome, monitor.report()

    def _collect_outputs(self, task: ActiveTask, workspace: Path, spec: TaskSpec) -> None:
        """Make the task's output folder and the collector that syncs it and its globs."""
        try:
            (workspace / OUTPUT_DIR).mkdir(exist_ok=True)
        except OSError as exc:  # a file of that name in the repository
            task.sink.line(f"[overnight] warning: cannot make the output folder: {exc}")
        task.outputs = OutputCollector(
            self.outputs,
            self.store.redis,
            task_id=task.task_id,
            attempt=task.record.attempt,
            tree=workspace,
            patterns=spec.outputs,
            cap_bytes=self.config.output_cap_bytes,
        )

    def _read_metrics(
        self, task: ActiveTask, tree: Path, spec: TaskSpec, *, resumed: bool = False
    ) -> None:
        """Make the feed that reads the run's metrics from its output and metrics files; a
        resumed run goes on from what its record holds."""
        tracker = MetricTracker(started=task.record.started)
        if resumed and task.record.metrics:
            series = self._retry(lambda: self.store.metric_series(task.task_id))
            tracker.resume(task.record.metrics, series)
        files = None
        if spec.metric_files:
            files = MetricFiles(
                tracker,
                tree,
                spec.metric_files,
                warn=lambda message: task.sink.line(f"[overnight] warning: {message}"),
            )
        task.metrics = MetricFeed(tracker, files, poll_interval=self.config.monitor_interval)

    def _restore_outputs(self, task: ActiveTask) -> bool:
        """Write the outputs an earlier attempt stored (or those ``retry --resume`` gave the
        task) into its fresh tree; whether any are there now (``OVERNIGHT_RESUME=1``). A file
        that cannot be restored is a warning, never a failed task."""
        assert task.outputs is not None
        try:
            report = self._retry(task.outputs.restore)
        except OvernightError as exc:  # its manifest unreadable: the run starts afresh
            task.sink.line(f"[overnight] warning: outputs not restored: {_one_line(exc)}")
            return False
        if report is None:
            return False
        say = task.sink.line
        for failure in report.failed:
            say(f"[overnight] warning: output not restored: {failure}")
        restored = len(report.fetched) + len(report.skipped)
        if restored:
            say(
                f"[overnight] resuming: {restored} stored output file(s) restored into the tree; "
                "OVERNIGHT_RESUME=1"
            )
        note = f"attempt {task.record.attempt + 1} resumed from {restored} stored output file(s)"
        if report.failed:
            note += f"; {len(report.failed)} could not be restored (its log says why)"
        self._retry(lambda: self.store.add_note(task.task_id, note))
        return restored > 0

    def _samplers(self, task: ActiveTask, process: Process) -> list[Sampler]:
        samplers = process.samplers()
        if task.gpu_ids:
            samplers.append(GPUSampler(self.gpu_probe, task.gpu_ids))
        return samplers

    def _ended(
        self, task: ActiveTask, outcome: RunOutcome, extra: dict[str, Any] | None = None
    ) -> Ending:
        extra = {**(extra or {}), "run": {"duration": round(outcome.duration, 3)}}
        if outcome.dropped_lines:
            extra["run"]["dropped_log_lines"] = outcome.dropped_lines
        code = outcome.exit_code
        if outcome.reason == CANCELED:
            return self._stopped(task, Phase.RUN, extra, code, killed=outcome.killed)
        if outcome.reason == TIMED_OUT:
            return Ending(TaskStatus.FAILED, Phase.RUN, outcome.describe(), code, extra=extra)
        if code in SHUTDOWN_EXITS and self._shutting_down():
            return Ending(
                TaskStatus.QUEUED,
                note=f"{outcome.how()} while agent {self.agent} was stopping (its service or host "
                "shutting down); requeued at the front",
                extra=extra,
            )
        if code == 0:
            return Ending(TaskStatus.FINISHED, exit_code=0, extra=extra)
        oom = task.process is not None and task.process.oom_killed()
        error = outcome.describe() + (" (killed by the host's OOM killer)" if oom else "")
        kind = FailureKind.OOM if oom else None
        return Ending(TaskStatus.FAILED, Phase.RUN, error, code, extra=extra, failure=kind)

    def _host_fault(self, task: ActiveTask, fault: str, phase: Phase, exc: BaseException) -> Ending:
        """Put the task back at the front and hold off new tasks: the host is at fault. A task
        that met ``MAX_HOST_FAULTS`` of them fails: it may never fit (an environment larger
        than any agent's disk)."""
        self.hold.hold(f"{fault} during {phase.value}")
        pause = format_duration(self.config.fault_pause)
        task.sink.line(f"[overnight] {_one_line(exc)}")
        met = int(task.record.extra.get("host_faults", 0)) + 1
        if met >= MAX_HOST_FAULTS:
            return Ending(
                TaskStatus.FAILED,
                phase,
                f"{_one_line(exc)} ({met} times, each on a full disk)",
                failure=FailureKind.INFRA,
            )
        log.warning(
            "task %s: %s during %s; it goes back to the front of its queue and this agent takes "
            "no task for %s",
            task.task_id,
            fault,
            phase.value,
            pause,
        )
        return Ending(
            TaskStatus.QUEUED,
            note=f"agent {self.agent}: {fault} during {phase.value}; requeued at the front, "
            f"the agent pauses {pause}",
            host_faults=met,
        )

    def _shutting_down(self) -> bool:
        """Whether the agent is stopping, its stop signal given a moment to arrive: a service
        manager (systemd's stop, a reboot) signals the agent and its tasks at once, so what
        failed may have failed because of it."""
        return self.stopping.wait(STOP_SIGNAL_WAIT)

    def _stopped(
        self,
        task: ActiveTask,
        phase: Phase,
        extra: dict[str, Any] | None = None,
        code: int | None = None,
        *,
        killed: bool = False,
    ) -> Ending:
        if task.taken.is_set():
            return Ending(TaskStatus.FAILED, phase, task.taken_why, code, recorded=False)
        if task.canceled.is_set():
            where = "while running" if phase is Phase.RUN else f"during {phase.value}"
            note = f"canceled {where}"
            if killed:  # the bare exit code (-9, or 137 from a container) says it without words
                note += (
                    f"; still running {format_duration(self._grace(task))} after SIGTERM, it "
                    "was killed with SIGKILL"
                )
            return Ending(TaskStatus.CANCELED, phase, None, code, note, extra or {})
        why = task.evicted_why or f"agent {self.agent} shut down"
        return Ending(
            TaskStatus.QUEUED,
            note=f"{why} during {phase.value}; requeued at the front",
            extra=extra or {},
        )

    def _request(
        self, task: ActiveTask, snapshot: Snapshot, workspace: Path, *, resumed: bool
    ) -> RunRequest:
        record = task.record
        env = dict(snapshot.spec.env)
        env.update(
            OVERNIGHT_TASK_ID=record.id,
            OVERNIGHT_TASK_NAME=record.name or "",
            OVERNIGHT_ATTEMPT=str(record.attempt),
            OVERNIGHT_QUEUE=record.options.queue,
            OVERNIGHT_AGENT=self.agent,
            OVERNIGHT_AGENT_PID=str(os.getpid()),
            OVERNIGHT_OUTPUT_DIR=self.environment.seen_path(workspace, OUTPUT_DIR),
            CUDA_VISIBLE_DEVICES=",".join(task.gpu_ids),
            CUDA_DEVICE_ORDER="PCI_BUS_ID",
        )
        if resumed:
            env["OVERNIGHT_RESUME"] = "1"
        else:
            env.pop("OVERNIGHT_RESUME", None)  # the spec's own: only the agent says it resumes
        return RunRequest(
            task_id=record.id,
            argv=snapshot.spec.argv,
            workspace=workspace,
            workdir=snapshot.spec.workdir,
            env=env,
            gpu_ids=task.gpu_ids,
            labels={"overnight.agent": self.agent, "overnight.attempt": str(record.attempt)},
        )

    def _grace(self, task: ActiveTask) -> float:
        grace = task.record.options.grace
        return self.config.grace if grace is None else grace

    def _warn(self, task: ActiveTask, prepared: Prepared) -> None:
        for warning in prepared.warnings:
            task.sink.line(f"[overnight] warning: {warning}")
            self._retry(lambda w=warning: self.store.add_note(task.task_id, w))

    # -- recording the end --------------------------------------------------------------------

    def _record(self, task: ActiveTask, ending: Ending) -> None:
        """Write the ending once Redis answers (logs first), then free the workspace."""
        task.ended.set()  # the run is over: what its heartbeats find is for this write to judge
        if ending.recorded and task.outputs is not None and task.process is not None:
            self._store_outputs(task)
        if ending.status.is_final and ending.error:
            where = f" in {ending.phase.value}" if ending.phase is not None else ""
            task.sink.line(f"[overnight] {ending.status.value}{where}: {ending.error}")
        backoff = Backoff(longest=self.config.max_backoff)
        while not task.sink.flush():
            backoff.wait(ConnectionError("the task's log cannot be written"))
        if ending.recorded:
            try:
                self._retry(lambda: self._write(task, ending))
            except (InvalidTransition, CorruptRecord, TaskNotFound) as exc:
                # Moved on, damaged, or gone (a Redis that came back empty): nothing to write.
                log.warning("task %s: %s; its result here was not recorded", task.task_id, exc)
        task.sink.close()
        if task.process is not None:
            task.process.discard()  # its output and exit code are saved now
        try:
            self.workspaces.remove(task.task_id)
        except OSError as exc:
            log.warning("task %s: cannot remove its workspace: %s", task.task_id, exc)

    def _store_outputs(self, task: ActiveTask) -> None:
        """The last sync of a run's outputs, whatever its ending; its faults are notes."""
        assert task.outputs is not None
        report = task.outputs.sync(final=True)
        if report.stored or report.not_kept:
            kept = f", {report.not_kept} not kept" if report.not_kept else ""
            task.sink.line(
                f"[overnight] outputs: {report.stored} file(s) stored now "
                f"({report.uploaded} new to the store){kept}; overnight outputs {task.task_id} "
                "lists them"
            )

    def _write(self, task: ActiveTask, ending: Ending) -> None:
        if ending.status is TaskStatus.QUEUED:
            kept: dict[str, Any] = {"host_faults": ending.host_faults} if ending.host_faults else {}
            self.store.transition(
                task.task_id,
                TaskStatus.QUEUED,
                Change(extra=kept),  # a queued task keeps no run's extra; this count it keeps
                expect=ACTIVE_STATUSES,
                held_by=self.agent,
                at_front=True,
                note=ending.note,
            )
            return
        failed = ending.status is TaskStatus.FAILED
        metrics = None
        if task.metrics is not None:  # the series first: the final status is the last write
            task.metrics.write(self.store, task.task_id, agent=self.agent, expect=ACTIVE_STATUSES)
            metrics = task.metrics.tracker.summaries()
        kind = ending.kind
        options, attempt = task.record.options, task.record.attempt
        again = kind is not None and retried(kind, options.retry_on, attempt, options.retries)
        change = Change(
            metrics=metrics,
            extra=ending.extra,
            exit_code=ending.exit_code,
            phase=ending.phase if failed or ending.status is TaskStatus.CANCELED else None,
            error=ending.error if failed else None,
            failure=kind,
        )
        record = self.store.transition(
            task.task_id,
            ending.status,
            change,
            expect=ACTIVE_STATUSES,
            held_by=self.agent,
            note=ending.note or (ending.error or ""),
            release=not again,
        )
        if again:
            assert kind is not None
            self.store.requeue(
                task.task_id,
                note=f"attempt {attempt + 2} of {options.retries + 1}, after a {kind.value} "
                f"failure (--retry-on {','.join(options.retry_on)})",
                new_attempt=True,
            )
        elif self.notifier is not None:
            try:
                self.notifier.task_ended(record)
            except Exception:  # Redis away, a bug: the task's end is written, its word is not
                log.exception("task %s: cannot send its notifications", record.id)

    def _retry(self, call: Any) -> Any:
        return until_connected(call, Backoff(longest=self.config.max_backoff))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
