"""The agent daemon: take tasks from the queues in order and run each in its own thread.

The main thread pops jobs with blocking pops (a queued task starts at once when the agent has
room), claims each task (record ``queued`` -> ``preparing``, RQ job started) and hands it to a
task thread running :class:`~overnight.agent.pipeline.Pipeline`. A :class:`Control` thread keeps
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
from collections.abc import Sequence

import psutil
import redis

from overnight.agent.allocator import Allocator, Verdict
from overnight.agent.control import ActiveTask, Control
from overnight.agent.environments.base import Environment
from overnight.agent.gpus import GPUInventory
from overnight.agent.logsink import LogSink
from overnight.agent.pipeline import Pipeline
from overnight.agent.reconnect import CONNECTION_ERRORS, Backoff, until_connected
from overnight.agent.settings import AgentConfig
from overnight.agent.worker import AgentWorker, Claim
from overnight.agent.workspace import GitCredentials, Workspaces
from overnight.errors import CorruptRecord, InvalidTransition, TaskNotFound
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.connection import connect
from overnight.queue.jobs import is_overnight_job, record_refusal, refusal_message, task_id_of
from overnight.queue.records import Phase, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)

IDLE, BUSY, DRAINING = "idle", "busy", "draining"
_WAKE = 0.5  # longest sleep of the main thread while it waits for room (signals are seen then)
_SKIP_QUEUE = 5.0  # seconds a queue is left alone after its head asked for more than we offer


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
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.worker = worker
        self.pipeline = pipeline
        self.allocator = Allocator(
            gpu_ids,
            config.cpu_slots,
            inventory=inventory,
            own_pids=self.own_pids,
            warn=log.warning,
        )
        self.name = worker.name
        self.started = time.time()
        self._active: dict[str, ActiveTask] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop_requests = 0
        self._backoff = Backoff(longest=config.max_backoff)
        self._skip: dict[str, float] = {}  # queue name -> monotonic time to look at it again
        self.control = Control(
            config, store, worker, registry, tasks=self.active_tasks, info=self.info
        )

    # -- the outside's handles ----------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain. Second call: stop the tasks and requeue them at the front.

        Safe to call from a signal handler: it only sets flags.
        """
        self._stop_requests += 1
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
        pids: set[int] = set()
        for task in self.active_tasks():
            if task.pid is None:
                continue
            pids.add(task.pid)
            with contextlib.suppress(psutil.Error):
                pids.update(p.pid for p in psutil.Process(task.pid).children(recursive=True))
        return pids

    def info(self) -> AgentInfo:
        tasks = self.active_tasks()
        state = DRAINING if self.draining else BUSY if tasks else IDLE
        return AgentInfo(
            name=self.name,
            host=socket.gethostname(),
            queues=tuple(self.config.queues),
            gpus=tuple(self.allocator.gpu_ids),
            env_mode=self.config.env_mode,
            state=state,
            tasks=tuple(t.task_id for t in tasks),
            heartbeat=time.time(),
            pid=os.getpid(),
            started=self.started,
            extra={"slots": self.allocator.describe()},
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, burst: bool = False) -> None:
        """Serve until stopped (or, with ``burst``, until the queues are empty)."""
        until_connected(self._register, self._backoff)
        self.control.start()
        log.info("agent %s serving %s", self.name, ", ".join(self.config.queues))
        try:
            self._loop(burst)
        finally:
            self._wait_for_tasks()
            self.control.stop()
            self._unregister()

    def _loop(self, burst: bool) -> None:
        while not self.draining:
            skip = self._skipped()
            if not self._has_room() or (len(skip) == len(self.config.queues) and not burst):
                self._wait()
                continue
            try:
                claim = self.worker.dequeue(
                    None if burst else self.config.dequeue_timeout, skip=skip
                )
            except CONNECTION_ERRORS as exc:
                self._backoff.wait(exc)
                continue
            self._backoff.reset()
            if claim is None:
                if burst:
                    if not self.active_tasks():
                        return
                    self._wait()
                continue
            if self.draining:
                until_connected(functools.partial(self.worker.push_back, claim), self._backoff)
                return
            try:
                until_connected(functools.partial(self._take, claim), self._backoff)
            except Exception as exc:
                self._give_up(claim, exc)

    def _skipped(self) -> set[str]:
        now = time.monotonic()
        return {q for q, until in self._skip.items() if until > now}

    def _has_room(self) -> bool:
        held = self.allocator.holders()
        cpu_busy = sum(1 for gpus in held.values() if not gpus)
        return cpu_busy < self.allocator.cpu_slots or bool(self.allocator.free())

    def _wait(self) -> None:
        self._changed.wait(_WAKE)
        self._changed.clear()

    # -- claiming a task ----------------------------------------------------------------------

    def _take(self, claim: Claim) -> None:
        """Claim a popped job: refuse it, drop it, hand it back, or start its task thread.

        Safe to call again after a Redis outage interrupted it: a claim already written
        (``preparing`` by this agent, resources held) goes on from there.
        """
        job = claim.job
        if not is_overnight_job(job):
            message = refusal_message(job)
            log.warning("%s", message)
            record_refusal(job, message)
            self.worker.refuse(claim, message)
            return
        task_id = task_id_of(job)
        try:
            record = self.store.get(task_id)
        except TaskNotFound:
            self.worker.refuse(claim, f"refused by agent {self.name}: no task {task_id} stored")
            return
        except CorruptRecord as exc:
            log.error("%s", exc)
            self.worker.refuse(claim, f"refused by agent {self.name}: {exc}")
            return
        held = self.allocator.holders().get(task_id)
        resumed = (
            held is not None
            and record.status is TaskStatus.PREPARING
            and record.agent == self.name
            and task_id not in self._active
        )
        if resumed:
            assert held is not None
            gpu_ids = held
        else:
            if record.status is not TaskStatus.QUEUED:
                log.info("task %s is %s, not queued; skipping it", task_id, record.status.value)
                self.worker.drop(claim)
                return
            granted = self._resources(claim, record)
            if granted is None:
                return
            gpu_ids = granted
            try:
                record = self.store.transition(
                    task_id,
                    TaskStatus.PREPARING,
                    expect={TaskStatus.QUEUED},
                    note=f"taken by agent {self.name}",
                    heartbeat_ttl=self.config.lost_ttl,
                    agent=self.name,
                    gpu_ids=gpu_ids,
                )
            except InvalidTransition:
                self.allocator.release(task_id)
                self.worker.drop(claim)
                return
        self._launch(record, claim, gpu_ids)

    def _resources(self, claim: Claim, record: TaskRecord) -> tuple[str, ...] | None:
        """The GPUs granted to the task (``()``: a CPU slot), or None after handing it back."""
        decision = self.allocator.plan(record.id, record.options.gpus)
        if decision.verdict is Verdict.GRANTED:
            return decision.gpu_ids
        self.worker.push_back(claim)
        if decision.verdict is Verdict.WAIT:
            self.allocator.wait(_WAKE)
        else:  # this agent can never run it: leave its queue to other agents for a while
            self.allocator.withdraw(record.id)
            self._skip[claim.queue.name] = time.monotonic() + _SKIP_QUEUE
            note = f"agent {self.name} cannot run it: {decision.reason}"
            if note not in record.notes:
                self.store.add_note(record.id, note)
        return None

    def _launch(self, record: TaskRecord, claim: Claim, gpu_ids: tuple[str, ...]) -> None:
        sink = LogSink(
            functools.partial(self.store.logs.append, record.id),
            self.config.spill_path / f"{self.name}-{record.id}.jsonl",
            memory_bytes=self.config.log_buffer_bytes,
        )
        task = ActiveTask(record=record, claim=claim, gpu_ids=gpu_ids, sink=sink)
        if self._stop_requests >= 2:
            task.evicted.set()
        with self._lock:
            self._active[record.id] = task
        self.control.beat_soon()
        thread = threading.Thread(
            target=self._run_task, args=(task,), name=f"overnight-task-{record.id}", daemon=True
        )
        thread.start()

    def _run_task(self, task: ActiveTask) -> None:
        gpus = f" on GPU {','.join(task.gpu_ids)}" if task.gpu_ids else ""
        log.info("task %s: taken from %s%s", task.task_id, task.claim.queue.name, gpus)
        try:
            ending = self.pipeline.run(task)
            detail = f": {ending.error}" if ending.error else ""
            log.info("task %s: %s%s", task.task_id, ending.status.value, detail)
        finally:
            self.allocator.release(task.task_id)
            with self._lock:
                self._active.pop(task.task_id, None)
            self.control.beat_soon()
            self._changed.set()

    def _give_up(self, claim: Claim, exc: Exception) -> None:
        """A claim that failed for an unexpected reason: fail its task, keep serving."""
        log.exception("agent error while taking job %s", claim.job_id)
        message = f"agent {self.name} could not take the task: {type(exc).__name__}: {exc}"
        try:
            self.allocator.release(claim.job_id)
            self.store.transition(
                claim.job_id,
                TaskStatus.FAILED,
                expect={TaskStatus.QUEUED, TaskStatus.PREPARING},
                phase=Phase.AGENT,
                error=message,
                note=message,
            )
        except Exception:
            log.exception("could not record the failure of %s", claim.job_id)
            self.worker.drop(claim)

    # -- start and end -------------------------------------------------------------------------

    def _register(self) -> None:
        self.worker.register()
        self.registry.register(self.info(), ttl=self.control._registry_ttl)

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
) -> Daemon:
    """A daemon wired to Redis at ``config.redis_url``; raises ConnectionFailed when unreachable."""
    name = config.agent_name
    connection = connect(config.redis_url)
    blocking = redis.Redis.from_url(
        config.redis_url,
        socket_timeout=config.dequeue_timeout + 10.0,
        socket_connect_timeout=5.0,
    )
    store = TaskStore(connection, log_cap_mb=config.log_cap_mb)
    workspaces = Workspaces(
        config.workspace_path,
        credentials=GitCredentials(tokens=config.git_tokens, ssh_command=config.git_ssh_command),
        keep=config.keep_workspaces,
    )
    return Daemon(
        config,
        store=store,
        registry=AgentRegistry(connection),
        worker=AgentWorker(connection, blocking, name, config.queues, stale_after=config.lost_ttl),
        pipeline=Pipeline(config, store, workspaces, environment, agent_name=name),
        gpu_ids=gpu_ids,
        inventory=inventory,
    )
