"""Taking back task containers after an agent restart (docker mode).

A container outlives its agent. When an agent starts again under the same name, it finds its
own task containers by label: a task its record still shows running on this agent is adopted
(its log continues where it stopped, its end is recorded as usual, a cancel stops it); any other
container (its task was canceled, declared lost or is unknown) is removed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from overnight.agent.environments.docker.environment import AdoptedTask, DockerEnvironment
from overnight.agent.run.pipeline import Ending
from overnight.agent.run.task import ActiveTask
from overnight.errors import CorruptRecord, TaskNotFound
from overnight.queue.records import ACTIVE_STATUSES

if TYPE_CHECKING:
    from overnight.agent.service.daemon import Daemon

log = logging.getLogger(__name__)


def adopt_containers(daemon: Daemon, environment: DockerEnvironment) -> list[str]:
    """Adopt this agent's live task containers; returns the ids of the tasks adopted."""
    adopted = []
    for found in environment.adopt():
        if found.task_id in {t.task_id for t in daemon.active_tasks()}:
            continue
        try:
            record = daemon.store.get(found.task_id)
        except (TaskNotFound, CorruptRecord) as exc:
            log.warning("removing container of task %s: %s", found.task_id or "?", exc)
            found.process.remove()
            continue
        if record.status not in ACTIVE_STATUSES or record.agent != daemon.name:
            log.warning(
                "removing container of task %s: it is %s%s",
                record.id,
                record.status.value,
                f" on agent {record.agent}" if record.agent != daemon.name else "",
            )
            found.process.remove()
            continue
        _adopt(daemon, found, record.gpu_ids)
        adopted.append(record.id)
    return adopted


def _adopt(daemon: Daemon, found: AdoptedTask, gpu_ids: tuple[str, ...]) -> None:
    task_id = found.task_id
    daemon.store.heartbeat(task_id, daemon.name, ttl=daemon.config.lost_ttl)
    booked = daemon.allocator.acquire_ids(task_id, gpu_ids)
    if set(booked) != set(gpu_ids):
        log.warning(
            "task %s runs on GPU %s but this agent (--gpus %s) could book only %s",
            task_id,
            ",".join(gpu_ids),
            daemon.config.gpus,
            ",".join(booked) or "none",
        )
    tail = daemon.store.logs.tail(task_id, 20)  # matched against the container's own log
    process = found.process_after([(entry.time, entry.line) for entry in tail])
    state = "still running" if found.running else f"exited with {found.exit_code}"
    log.info("task %s: adopting its container %s (%s)", task_id, process.ident[:12], state)

    def resume(task: ActiveTask) -> Ending:
        task.sink.line(f"[overnight] agent {daemon.name} restarted; container {state}, adopted")
        return daemon.pipeline.resume(task, process)

    daemon.launch(daemon.store.get(task_id), gpu_ids, run=resume)
