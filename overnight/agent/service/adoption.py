"""Taking back task processes after an agent restart (docker mode's containers).

A task may outlive its agent (a container does). When an agent starts again under the same name,
its environment finds its own task processes (``Environment.adopt``: containers by label): a task
its record still shows running on this agent is adopted (its log continues where it stopped, its
end is recorded as usual, a cancel stops it); any other (its task was canceled, declared lost or
is unknown) is removed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from overnight.agent.environments.base import AdoptedTask, Environment
from overnight.agent.run.pipeline import Ending
from overnight.agent.run.task import ActiveTask
from overnight.errors import CorruptRecord, TaskNotFound
from overnight.queue.records import ACTIVE_STATUSES

if TYPE_CHECKING:
    from overnight.agent.service.daemon import Daemon

log = logging.getLogger(__name__)


def adopt_containers(daemon: Daemon, environment: Environment) -> list[str]:
    """Adopt this agent's task processes that outlived its last run (containers); returns the
    ids of the tasks adopted."""
    adopted = []
    for found in environment.adopt():
        if found.task_id in {t.task_id for t in daemon.active_tasks()}:
            continue
        try:
            record = daemon.store.get(found.task_id)
        except (TaskNotFound, CorruptRecord) as exc:
            log.warning("removing %s of task %s: %s", found.what, found.task_id or "?", exc)
            found.discard()
            continue
        if record.status not in ACTIVE_STATUSES or record.agent != daemon.name:
            log.warning(
                "removing %s of task %s: it is %s%s",
                found.what,
                record.id,
                record.status.value,
                f" on agent {record.agent}" if record.agent != daemon.name else "",
            )
            found.discard()
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
    tail = daemon.store.logs.tail(task_id, 20)  # matched against the process's own output
    process = found.process_after([(entry.time, entry.line) for entry in tail])
    state = "still running" if found.running else f"exited with {found.exit_code}"
    what = found.what
    log.info("task %s: adopting its %s %s (%s)", task_id, what, process.ident[:12], state)

    def resume(task: ActiveTask) -> Ending:
        task.sink.line(f"[overnight] agent {daemon.name} restarted; {what} {state}, adopted")
        return daemon.pipeline.resume(task, process)

    daemon.launch(daemon.store.get(task_id), gpu_ids, run=resume)
