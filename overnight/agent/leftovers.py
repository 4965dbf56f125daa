"""Removing the task trees a killed agent left behind, when an agent starts.

An agent killed with SIGKILL never removes the trees of the tasks it ran. At start (after it
adopted its containers, in docker mode) an agent removes a tree under its workspace folder when
no agent will use it again: its task's record is final, queued again or gone, or the agent it
shows is not alive (no heartbeat of the task and no registration of another agent by that
name). Several agents may share one workspace folder, so a task that is preparing or running on
a live agent keeps its tree, and so does any task whose record cannot be read.
"""

from __future__ import annotations

import logging

from overnight.agent.workspace import Workspaces
from overnight.errors import CorruptRecord, TaskNotFound
from overnight.queue import keys
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)

_REQUEUED = frozenset({TaskStatus.QUEUED, TaskStatus.WAITING})


class Leftovers:
    """Which task trees under a workspace folder no live agent uses any more."""

    def __init__(
        self, workspaces: Workspaces, store: TaskStore, agent: str, active: frozenset[str]
    ) -> None:
        self.workspaces = workspaces
        self.store = store
        self.agent = agent
        self.active = active  # the tasks this agent runs now (adopted containers)

    def remove(self) -> list[str]:
        """Remove the trees no agent uses any more; returns their task ids."""
        if self.workspaces.keep:
            return []
        removed = []
        for task_id in self.workspaces.task_ids():
            try:
                gone = self.workspaces.remove_unused(task_id, self.unused)
            except OSError as exc:
                log.warning("could not remove the tree left by task %s: %s", task_id, exc)
                continue
            if gone:
                removed.append(task_id)
        if removed:
            log.info(
                "removed %d task tree(s) left by agents no longer running them: %s",
                len(removed),
                ", ".join(removed),
            )
        return removed

    def unused(self, task_id: str) -> bool:
        """Whether no agent uses the task's tree any more; False when in doubt."""
        if task_id in self.active:
            return False
        try:
            record = self.store.get(task_id)
        except TaskNotFound:
            why = "its task is gone"
        except CorruptRecord:
            return False
        else:
            if record.status.is_final or record.status in _REQUEUED:
                why = f"its task is {record.status.value}"
            elif self._alive(task_id, record.agent):
                return False
            else:
                why = f"its task's agent {record.agent or '?'} is gone"
        log.info("removing the tree of task %s under %s: %s", task_id, self.workspaces.root, why)
        return True

    def _alive(self, task_id: str, agent: str | None) -> bool:
        """A heartbeat of the task, or a registration of its agent (this agent's own name is
        not proof: this agent runs none of the tasks it did not adopt)."""
        redis = self.store.redis
        if redis.exists(keys.heartbeat(task_id)):
            return True
        return agent is not None and agent != self.agent and bool(redis.exists(keys.agent(agent)))


def remove_leftovers(
    workspaces: Workspaces, store: TaskStore, agent: str, active: frozenset[str] = frozenset()
) -> list[str]:
    """Remove the task trees under ``workspaces`` that no live agent uses; their task ids."""
    return Leftovers(workspaces, store, agent, active).remove()
