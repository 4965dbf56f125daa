"""Removing what a killed agent left behind, when an agent starts: task processes and trees.

An agent killed with SIGKILL never stops its local task processes (a task that prints dies at its
next write to the broken pipe; a quiet one runs on, holding its GPUs) and never removes its tasks'
trees. At start (after it adopted its containers, in docker mode) an agent stops every process on
this host started for a task of its workspace folder (``OVERNIGHT_TASK_ID`` in its environment, its
working directory in that task's tree, in this pid namespace: containers are the docker adoption's)
and removes every tree under its workspace folder, when no agent will use it again: its task's
record is final, queued again or gone, or the agent it shows is not alive (no heartbeat of the task
and no registration of another agent by that name). Several agents may share a host, so a task that
is preparing or running on a live agent keeps its processes and tree, and so does any task whose
record cannot be read. A tree made by an agent that keeps workspaces is never removed, whatever
the agent now starting on the folder keeps (:meth:`Workspaces.kept_mark`). Two proofs need no waiting for a heartbeat to expire: a process whose
agent process (``OVERNIGHT_AGENT_PID``) is gone from this host is stopped and its task marked lost
at once; and a task that shows this agent's own name is its earlier run's (only one agent of a name runs at
once), so a restart under the same name (systemd's ``Restart=``) stops its processes and marks it
lost at once, also when it had none (preparing, or a container that is gone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from overnight.agent.workspace.workspaces import Workspaces
from overnight.errors import CorruptRecord, ReconstructError, TaskNotFound
from overnight.queue import keys
from overnight.queue.reaper import reap_orphaned, reap_restarted
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)

_REQUEUED = frozenset({TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.HELD})


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
        why = self.why_unused(task_id)
        if why is not None:
            log.info(
                "removing the tree of task %s under %s: %s", task_id, self.workspaces.root, why
            )
        return why is not None

    def why_unused(self, task_id: str) -> str | None:
        """Why no agent will use the task's tree or processes again; None when one may."""
        if task_id in self.active:
            return None
        try:
            record = self.store.get(task_id)
        except TaskNotFound:
            return "its task is gone"
        except CorruptRecord:
            return None
        if record.status.is_final or record.status in _REQUEUED:
            return f"its task is {record.status.value}"
        if self._alive(task_id, record.agent):
            return None
        return f"its task's agent {record.agent or '?'} is gone"

    def stop_strays(self, grace: float = 5.0, *, orphans_only: bool = False) -> list[str]:
        """Stop the process groups of tasks no agent runs any more; returns their task ids.

        A process whose agent (``OVERNIGHT_AGENT_PID``) is gone from this host is stopped
        whatever the records say, and its task, if that agent still holds it, is marked lost
        at once: nobody reads its output or will record its end. With ``orphans_only`` (a
        running agent's periodic look) only those are stopped.
        """
        groups: dict[int, TaskProcess] = {}
        for found in _task_processes(self.workspaces):
            with contextlib.suppress(psutil.Error, OSError):
                groups.setdefault(os.getpgid(found.proc.pid), found)
        stopped = []
        orphaned: dict[str, str] = {}
        for pgid, found in sorted(groups.items()):
            if pgid == os.getpgrp():
                continue
            if found.agent_gone():
                why: str | None = f"its agent {found.agent or '?'} (pid {found.agent_pid}) is gone"
                if found.agent:
                    orphaned[found.task_id] = found.agent
            elif orphans_only:
                continue
            else:
                why = self.why_unused(found.task_id)
            if why is None:
                continue
            log.warning(
                "stopping the processes of task %s (group %d): %s", found.task_id, pgid, why
            )
            _stop_group(pgid, grace)
            stopped.append(found.task_id)
        lost = reap_orphaned(self.store, orphaned)
        if lost:
            log.warning(
                "marked lost the task(s) whose agent died, leaving them running here (requeued "
                "where retries are left): %s",
                ", ".join(lost),
            )
        return stopped

    def _alive(self, task_id: str, agent: str | None) -> bool:
        """A heartbeat of the task, or a registration of its agent. Neither counts for this
        agent's own name: it runs none of the tasks it did not adopt, and no other agent of
        its name runs (it registered), so they are its earlier run's, which died."""
        if agent == self.agent:
            return False
        redis = self.store.redis
        if redis.exists(keys.heartbeat(task_id)):
            return True
        return agent is not None and bool(redis.exists(keys.agent(agent)))


def remove_leftovers(
    workspaces: Workspaces, store: TaskStore, agent: str, active: frozenset[str] = frozenset()
) -> list[str]:
    """Stop the task processes and remove the task trees under ``workspaces`` that no live
    agent uses (processes first: a tree is never removed under a running task), after marking
    lost the tasks this agent's earlier run left; the ids of the tasks whose trees went."""
    leftovers = Leftovers(workspaces, store, agent, active)
    leftovers.stop_strays()
    lost = reap_restarted(store, agent, active)
    if lost:
        log.warning(
            "marked lost the task(s) agent %s ran when it died (requeued where retries are "
            "left): %s",
            agent,
            ", ".join(lost),
        )
    return leftovers.remove()


@dataclass(frozen=True)
class TaskProcess:
    """A process on this host started for a task, with what its environment says of it."""

    proc: psutil.Process
    task_id: str
    agent: str | None  # OVERNIGHT_AGENT: the name of the agent that started it
    agent_pid: int | None  # OVERNIGHT_AGENT_PID (None: from an agent that did not set it)

    def agent_gone(self) -> bool:
        """Whether the agent process that started it is gone (its pid now names nothing, a
        zombie or a process started after this one); False when in doubt."""
        if self.agent_pid is None:
            return False
        try:
            agent = psutil.Process(self.agent_pid)
            if agent.status() == psutil.STATUS_ZOMBIE:
                return True
            return agent.create_time() > self.proc.create_time()
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False


def _task_processes(workspaces: Workspaces) -> list[TaskProcess]:
    """Processes in this pid namespace started for a task whose tree is under ``workspaces``
    (agents of another workspace folder, maybe of another Redis, are none of ours)."""
    ours = _pid_namespace(os.getpid())
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or _pid_namespace(proc.pid) != ours:
                continue
            env = proc.environ()
            task_id = env.get("OVERNIGHT_TASK_ID")
            if not task_id:
                continue
            tree = workspaces.task_dir(task_id).resolve()
            cwd = Path(proc.cwd()).resolve()
        except (psutil.Error, OSError, ReconstructError):
            continue  # gone, not ours to read, or an id that names no tree
        if cwd == tree or tree in cwd.parents:
            pid = env.get("OVERNIGHT_AGENT_PID", "")
            agent_pid = int(pid) if pid.isdigit() else None
            found.append(TaskProcess(proc, task_id, env.get("OVERNIGHT_AGENT") or None, agent_pid))
    return found


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _stop_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL it when its leader outlives ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not psutil.pid_exists(pgid):
                return
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
