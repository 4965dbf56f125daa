"""Taking back task processes after an agent restart (docker mode's containers).

A task may outlive its agent (a container does). When an agent starts again under the same name,
its environment finds its own task processes (``Environment.adopt``: containers by label): a task
its record still shows running on this agent is adopted (its log continues where it stopped, its
end is recorded as usual, a cancel stops it); any other (its task was canceled, declared lost or
is unknown) is removed.
"""

import logging
from collections.abc import Callable

from overnight.agent.config import AgentConfig
from overnight.agent.environments.base import AdoptedTask, Environment
from overnight.agent.gpus.allocator import Allocator
from overnight.agent.run.pipeline import Ending, Pipeline
from overnight.agent.run.task import ActiveTask
from overnight.errors import CorruptRecord, TaskNotFound
from overnight.queue.records import ACTIVE_STATUSES, TaskRecord
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)

Launch = Callable[[TaskRecord, tuple[str, ...], Callable[[ActiveTask], Ending]], None]
"""Run a task in its own thread with the given run function (the daemon's ``launch``)."""


class Adoption:
    """Adopts one agent's task processes that outlived its last run, at its start."""

    def __init__(
        self,
        config: AgentConfig,
        store: TaskStore,
        allocator: Allocator,
        pipeline: Pipeline,
        *,
        name: str,
        launch: Launch,
        is_active: Callable[[str], bool],
    ) -> None:
        self.config = config
        self.store = store
        self.allocator = allocator
        self.pipeline = pipeline
        self.name = name
        self._launch = launch
        self._is_active = is_active

    def adopt(self, environment: Environment) -> list[str]:
        """Adopt this agent's live task processes (containers); returns the ids adopted."""
        adopted = []
        for found in environment.adopt():
            if self._is_active(found.task_id):
                continue
            try:
                record = self.store.get(found.task_id)
            except (TaskNotFound, CorruptRecord) as exc:
                log.warning("removing %s of task %s: %s", found.what, found.task_id or "?", exc)
                found.discard()
                continue
            if record.status not in ACTIVE_STATUSES or record.agent != self.name:
                log.warning(
                    "removing %s of task %s: it is %s%s",
                    found.what,
                    record.id,
                    record.status.value,
                    f" on agent {record.agent}" if record.agent != self.name else "",
                )
                found.discard()
                continue
            self._adopt(found, record.gpu_ids)
            adopted.append(record.id)
        return adopted

    def _adopt(self, found: AdoptedTask, gpu_ids: tuple[str, ...]) -> None:
        task_id = found.task_id
        self.store.heartbeat(task_id, self.name, ttl=self.config.lost_ttl)
        booked = self.allocator.acquire_ids(task_id, gpu_ids)
        if set(booked) != set(gpu_ids):
            log.warning(
                "task %s runs on GPU %s but this agent (--gpus %s) could book only %s",
                task_id,
                ",".join(gpu_ids),
                self.config.gpus,
                ",".join(booked) or "none",
            )
        tail = self.store.logs.tail(task_id, 20)  # matched against the process's own output
        process = found.process_after([(entry.time, entry.line) for entry in tail])
        state = "still running" if found.running else f"exited with {found.exit_code}"
        what = found.what
        log.info("task %s: adopting its %s %s (%s)", task_id, what, process.ident[:12], state)

        def resume(task: ActiveTask) -> Ending:
            task.sink.line(f"[overnight] agent {self.name} restarted; {what} {state}, adopted")
            return self.pipeline.resume(task, process)

        self._launch(self.store.get(task_id), gpu_ids, resume)
