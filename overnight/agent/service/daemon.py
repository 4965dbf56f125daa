"""The agent daemon: take tasks from the queues in order and run each in its own thread.

The main thread pops jobs with blocking pops (a queued task starts at once when the agent has
room), claims each task (record ``queued`` -> ``preparing``, RQ job started) and hands it to a
task thread running :class:`~overnight.agent.run.pipeline.Pipeline`. A :class:`Control` thread keeps
heartbeats and cancel flags. Redis outages are waited out with backoff, never fatal.

Stopping: :meth:`Daemon.request_stop` once drains (running tasks finish, no new ones start);
twice stops the running tasks and puts them back at the front of their queues.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from overnight.agent.config import AgentConfig
from overnight.agent.environments.base import Environment
from overnight.agent.gpus.allocator import Allocator
from overnight.agent.gpus.hardware import hardware_info
from overnight.agent.gpus.inventory import GPUInventory
from overnight.agent.run.logsink import LogSink
from overnight.agent.run.pipeline import Ending, Pipeline
from overnight.agent.run.task import ActiveTask
from overnight.agent.service.adoption import Adoption
from overnight.agent.service.fitting import WindowFit
from overnight.agent.service.housekeeping import Control
from overnight.agent.service.intake import Intake
from overnight.agent.service.leftovers import Leftovers, remove_leftovers
from overnight.agent.service.reconnect import CONNECTION_ERRORS, Backoff, until_connected
from overnight.agent.service.rqworker import AgentWorker
from overnight.agent.service.windows import Clock, SystemClock, Windows
from overnight.agent.workspace.remotes import GitCredentials
from overnight.agent.workspace.workspaces import Workspaces
from overnight.notify.digest import Digest
from overnight.notify.notifier import Notifier
from overnight.notify.schedule import DigestSchedule
from overnight.outputs.stores import open_store
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.connection import acks_for, connect, persistence_warning
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.units import format_duration

log = logging.getLogger(__name__)

IDLE, BUSY, DRAINING, PAUSED = "idle", "busy", "draining", "paused"
_WAKE = 0.5  # longest sleep of the main thread while it waits for room (signals are seen then)


class Daemon:
    """One agent: its queues, its slots, its running tasks."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: TaskStore,
        registry: AgentRegistry,
        worker: AgentWorker,
        pipeline: Pipeline,
        gpu_ids: Sequence[str] = (),
        inventory: GPUInventory | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.windows = Windows.parse(config.uptime, config.downtime)
        self.clock = clock or SystemClock()
        self.store = store
        self.registry = registry
        self.worker = worker
        self.pipeline = pipeline
        self.allocator = Allocator(
            gpu_ids,
            config.cpu_slots,
            inventory=inventory,
            foreign_threshold_mb=config.gpu_foreign_mb,
            own_pids=self.own_pids,
            warn=log.warning,
        )
        self.name = worker.name
        self.started = time.time()
        self.hardware = hardware_info(pipeline.inventory)
        self._active: dict[str, ActiveTask] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop_requests = 0
        self._backoff = Backoff(longest=config.max_backoff)
        self.fit = WindowFit(store, worker)
        self.intake = Intake(
            config,
            store,
            worker,
            self.allocator,
            launch=self.launch,
            is_active=lambda task_id: task_id in self._active,
        )
        self.adoption = Adoption(
            config,
            store,
            self.allocator,
            self.pipeline,
            name=self.name,
            launch=self.launch,
            is_active=lambda task_id: task_id in self._active,
        )
        self.control = Control(
            config,
            store,
            worker,
            registry,
            tasks=self.active_tasks,
            info=self.info,
            strays=self._stop_orphans,
            notifier=pipeline.notifier,
            digest=self._digest(),
        )

    def _digest(self) -> Digest | None:
        schedule = DigestSchedule.parse(self.config.digest)
        notifier = self.pipeline.notifier
        if not schedule.slots or notifier is None:
            return None
        return Digest(schedule, notifier, self.clock.now)

    # -- the outside's handles ----------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain. Second call: stop the tasks and requeue them at the front.

        Safe to call from a signal handler: it only sets flags.
        """
        self._stop_requests += 1
        self.pipeline.stopping.set()
        if self._stop_requests >= 2:
            for task in self.active_tasks():
                task.evicted.set()

    @property
    def draining(self) -> bool:
        return self._stop_requests > 0

    def active_tasks(self) -> list[ActiveTask]:
        with self._lock:
            return list(self._active.values())

    def own_pids(self) -> set[int]:
        """Every process of every task this agent runs (GPU memory they hold is not foreign)."""
        processes = [task.process for task in self.active_tasks()]
        return set().union(*(process.pids() for process in processes if process is not None))

    @property
    def paused(self) -> bool:
        """Outside its uptime windows (or inside a downtime one): no new tasks."""
        return not self.windows.is_open(self.clock.now())

    def info(self) -> AgentInfo:
        tasks = self.active_tasks()
        hold = self.pipeline.hold.current()
        paused = self.paused or hold is not None
        state = DRAINING if self.draining else PAUSED if paused else BUSY if tasks else IDLE
        return AgentInfo(
            name=self.name,
            host=socket.gethostname(),
            queues=tuple(self.config.queues),
            gpus=tuple(self.allocator.gpu_ids),
            env_mode=self.pipeline.environment.name,
            state=state,
            tasks=tuple(t.task_id for t in tasks),
            heartbeat=time.time(),
            pid=os.getpid(),
            started=self.started,
            extra={
                "slots": self.allocator.describe(),
                "usage": {t.task_id: t.monitor.latest() for t in tasks if t.monitor is not None},
                "hardware": self.hardware,
                "windows": {
                    **self.windows.to_dict(),
                    "state": self.windows.describe(self.clock.now()),
                },
                **({"hold": _describe_hold(*hold)} if hold is not None else {}),
                **({"waits": dict(self.fit.waits)} if self.fit.waits else {}),
            },
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, burst: bool = False) -> None:
        """Serve until stopped (or, with ``burst``, until the queues are empty)."""
        until_connected(self._register, self._backoff)
        environment = self.pipeline.environment
        until_connected(lambda: self.adoption.adopt(environment), self._backoff)
        until_connected(self._remove_leftovers, self._backoff)
        self.control.start()
        log.info("agent %s serving %s", self.name, ", ".join(self.config.queues))
        warning = persistence_warning(self.store.redis)
        if warning:
            log.warning("%s", warning)
        try:
            self._loop(burst)
        finally:
            self._wait_for_tasks()
            self.control.stop()
            self._unregister()
            if self.pipeline.notifier is not None:
                self.pipeline.notifier.close()

    def _loop(self, burst: bool) -> None:
        while not self.draining:
            try:
                if self._step(burst):
                    if burst:
                        self._say_what_is_left()
                    return
            except Exception:  # a bug in one round must not end the agent
                log.exception("agent loop error; going on")
                self._backoff.wait(RuntimeError("agent loop error"))

    def _step(self, burst: bool) -> bool:
        """One round of the loop: wait for room, pop, claim. True: the loop is done."""
        if self.paused:
            self._window_closed()
            if burst and not self.active_tasks():
                return True
            self._wait()
            return False
        if self.pipeline.hold.current() is not None:  # a full disk, met a moment ago
            self._wait()
            return False
        skip = self.intake.skipped()
        if not self.allocator.has_room() or (len(skip) == len(self.config.queues) and not burst):
            # No popping while nothing can start. A task's end sets the event after its release,
            # so an end that comes before this wait still wakes it (a condition would miss it).
            self._wait()
            return False
        left = self.windows.closes_in(self.clock.now())
        try:
            if left is None:
                claim = self.worker.dequeue(
                    None if burst else self.config.dequeue_timeout, skip=skip
                )
            else:  # a window that closes: only a task expected to end before it
                claim = self.fit.take(self.config.queues, left, skip=skip)
        except CONNECTION_ERRORS as exc:
            self._backoff.wait(exc)
            return False
        self._backoff.reset()
        if claim is None:
            if left is None:
                self.intake.emptied(set(self.config.queues) - skip)
            if burst and not self.active_tasks() and not self.intake.waiting():
                return True
            if burst or left is not None:
                self._wait()
            return False
        if self.draining or self.paused:  # a stop, or the window closed, while the pop waited
            until_connected(functools.partial(self.worker.push_back, claim), self._backoff)
            return self.draining
        try:
            until_connected(functools.partial(self.intake.take, claim), self._backoff)
        except Exception as exc:
            self.intake.give_up(claim, exc)
        return False

    def _say_what_is_left(self) -> None:
        """Before a ``--burst`` agent exits: the queued tasks it took and could never run."""
        for line in until_connected(self.intake.left_behind, self._backoff) or ():
            log.warning("exiting (--burst) with work left: %s", line)

    def _window_closed(self) -> None:
        """With ``window_end: stop``, stop the running tasks: they go back to the front."""
        if self.config.window_end != "stop":
            return
        for task in self.active_tasks():
            if not task.evicted.is_set():
                log.info("task %s: the window closed; stopping it", task.task_id)
                task.evict(f"agent {self.name}'s window closed (window_end: stop)")

    def _wait(self) -> None:
        self._changed.wait(_WAKE)
        self._changed.clear()

    def launch(
        self,
        record: TaskRecord,
        gpu_ids: tuple[str, ...],
        run: Callable[[ActiveTask], Ending] | None = None,
    ) -> None:
        """Run a claimed task in its own thread (``run``: the pipeline's, unless adopting)."""
        sink = LogSink(
            functools.partial(self.store.logs.append, record.id),
            self.config.spill_path / f"{self.name}-{record.id}.jsonl",
            memory_bytes=self.config.log_buffer_bytes,
        )
        task = ActiveTask(record=record, gpu_ids=gpu_ids, sink=sink)
        if self._stop_requests >= 2:
            task.evicted.set()
        with self._lock:
            self._active[record.id] = task
        self.control.beat_soon()
        thread = threading.Thread(
            target=self._run_task,
            args=(task, run or self.pipeline.run),
            name=f"overnight-task-{record.id}",
            daemon=True,
        )
        thread.start()

    def _run_task(self, task: ActiveTask, run: Callable[[ActiveTask], Ending]) -> None:
        gpus = f" on GPU {','.join(task.gpu_ids)}" if task.gpu_ids else ""
        log.info("task %s: taken from %s%s", task.task_id, task.record.options.queue, gpus)
        started = time.monotonic()
        try:
            ending = run(task)
            detail = f": {ending.error}" if ending.error else ""
            log.info("task %s: %s%s", task.task_id, ending.status.value, detail)
            if ending.status.is_final:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    self.worker.count(
                        finished=ending.status is TaskStatus.FINISHED,
                        seconds=time.monotonic() - started,
                    )
        finally:
            self.allocator.release(task.task_id)
            with self._lock:
                self._active.pop(task.task_id, None)
            self.control.beat_soon()
            self._changed.set()

    # -- start and end -------------------------------------------------------------------------

    def _register(self) -> None:
        self.worker.register()
        self.registry.register(self.info(), ttl=self.control._registry_ttl)

    def _remove_leftovers(self) -> None:
        """Remove the task trees that agents killed on this host left (kept: adopted ones)."""
        active = frozenset(task.task_id for task in self.active_tasks())
        remove_leftovers(self.pipeline.workspaces, self.store, self.name, active)

    def _stop_orphans(self) -> list[str]:
        """Stop the task processes of agents that died on this host (of this workspace folder)."""
        leftovers = Leftovers(self.pipeline.workspaces, self.store, self.name, frozenset())
        return leftovers.stop_strays(orphans_only=True)

    def _unregister(self) -> None:
        try:
            self.worker.unregister()
            self.registry.remove(self.name)
        except CONNECTION_ERRORS as exc:
            log.warning("could not unregister agent %s: %s", self.name, exc)

    def _wait_for_tasks(self) -> None:
        while self.active_tasks():
            self._wait()


def create_daemon(
    config: AgentConfig,
    environment: Environment,
    *,
    gpu_ids: Sequence[str] = (),
    inventory: GPUInventory | None = None,
    clock: Clock | None = None,
) -> Daemon:
    """A daemon wired to Redis at ``config.redis_url``; raises ConnectionFailed when unreachable."""
    name = config.agent_name
    connection = connect(config.redis_url)
    blocking = connect(config.redis_url, read_timeout=config.dequeue_timeout + 10.0)
    store = TaskStore(connection, log_cap_mb=config.log_cap_mb, acks=acks_for(config.redis_url))
    workspaces = Workspaces(
        config.workspace_path,
        credentials=GitCredentials(tokens=config.git_tokens, ssh_command=config.git_ssh_command),
        keep=config.keep_workspaces,
        max_mirrors=config.max_mirrors,
        allow_local_repos=config.allow_local_repos,
    )
    return Daemon(
        config,
        store=store,
        registry=AgentRegistry(connection),
        worker=AgentWorker(connection, blocking, name, config.queues, stale_after=config.lost_ttl),
        pipeline=Pipeline(
            config,
            store,
            workspaces,
            environment,
            agent_name=name,
            inventory=inventory,
            outputs=open_store(config.output_store, connection),
            notifier=Notifier(
                store,
                agent=name,
                targets=config.notify,
                smtp=config.smtp,
                tries=config.notify_tries,
                backoff=config.notify_backoff,
            ),
        ),
        gpu_ids=gpu_ids,
        inventory=inventory,
        clock=clock,
    )


def _describe_hold(reason: str, left: float) -> str:
    return f"{reason}; taking tasks again in {format_duration(left)}"
