"""Removing the task processes and trees killed agents left, at agent start: only those no live
agent uses."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overnight.agent.config import AgentConfig
from overnight.agent.service.leftovers import remove_leftovers
from overnight.agent.workspace.locks import FileLock
from overnight.agent.workspace.workspaces import Workspaces
from overnight.queue import keys
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.agents import agent_config, enqueue, run_burst
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import make_snapshot

pytestmark = pytest.mark.slow


def _task(store: TaskStore, project: Repo, *path: TaskStatus, agent: str = "agent-b") -> str:
    """A task taken through ``path`` of statuses by ``agent``."""
    task_id = enqueue(store, project).id
    for status in path:
        store.transition(task_id, status, Change(agent=agent))
    return task_id


def _tree(workspaces: Workspaces, task_id: str) -> Path:
    tree = workspaces.task_dir(task_id)
    (tree / ".git").mkdir(parents=True)
    (tree / "job.py").write_text("print('hi')\n")
    (tree / ".git" / "objects").mkdir()
    (tree / ".git" / "objects" / "ro").write_text("x")
    (tree / ".git" / "objects").chmod(0o555)  # git's read-only folders come out too
    return tree


def _running(store: TaskStore, project: Repo, agent: str) -> str:
    return _task(store, project, TaskStatus.PREPARING, TaskStatus.RUNNING, agent=agent)


def test_only_trees_no_live_agent_uses_are_removed(
    agent_store: TaskStore, project: Repo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = agent_store
    workspaces = Workspaces(tmp_path / "ws")
    for name in ("agent-a", "agent-b"):  # agent-a: this agent, registered before it cleans up
        AgentRegistry(store.redis).register(AgentInfo(name=name, host="h", queues=("q",)))
    done = _task(store, project, TaskStatus.PREPARING, TaskStatus.RUNNING, TaskStatus.FINISHED)
    requeued = _task(store, project, TaskStatus.PREPARING, TaskStatus.QUEUED)
    live = _running(store, project, "agent-b")  # heartbeat and registration
    live_silent = _running(store, project, "agent-b")  # registered, heartbeat just expired
    store.redis.delete(keys.heartbeat(live_silent))
    dead = _running(store, project, "agent-c")
    store.redis.delete(keys.heartbeat(dead))
    mine = _running(store, project, "agent-a")  # this agent's name, run before a SIGKILL
    store.redis.delete(keys.heartbeat(mine))
    mine_beating = _running(store, project, "agent-a")  # killed less than lost_ttl ago
    adopted = _running(store, project, "agent-a")
    store.redis.delete(keys.heartbeat(adopted))
    corrupt = _task(store, project)
    store.redis.set(keys.task(corrupt), b"{not json")
    trees = {
        task_id: _tree(workspaces, task_id)
        for task_id in (
            done,
            requeued,
            live,
            live_silent,
            dead,
            mine,
            mine_beating,
            adopted,
            corrupt,
            "0123456789ab",  # no record at all
        )
    }
    with caplog.at_level(logging.INFO, logger="overnight"):
        removed = remove_leftovers(workspaces, store, "agent-a", frozenset({adopted}))
    gone = {done, requeued, dead, mine, mine_beating, "0123456789ab"}
    assert sorted(removed) == sorted(gone)
    assert {t for t, tree in trees.items() if not tree.exists()} == gone
    assert {t for t, tree in trees.items() if tree.exists()} == {
        live,
        live_silent,
        adopted,
        corrupt,
    }
    # This agent's earlier run's tasks are lost at once, heartbeat or not; no other's is.
    status = {
        t: store.get(t).status for t in (live, live_silent, dead, mine, mine_beating, adopted)
    }
    assert status == {
        live: TaskStatus.RUNNING,
        live_silent: TaskStatus.RUNNING,
        dead: TaskStatus.RUNNING,  # the reaper's, once its heartbeat is gone
        mine: TaskStatus.LOST,
        mine_beating: TaskStatus.LOST,
        adopted: TaskStatus.RUNNING,
    }
    lost = store.get(mine_beating)
    assert lost.error == "agent agent-a died while the task was running"
    assert lost.history[-1].note == "agent agent-a restarted while the task was running"
    text = caplog.text
    assert f"removing the tree of task {done} under {workspaces.root}: its task is finished" in text
    assert f"task {dead} under {workspaces.root}: its task's agent agent-c is gone" in text
    assert "task 0123456789ab" in text and "its task is gone" in text
    assert "removed 6 task tree(s)" in text
    assert "marked lost the task(s) agent agent-a ran when it died" in text


def test_kept_workspaces_are_never_removed(
    agent_store: TaskStore, project: Repo, tmp_path: Path
) -> None:
    workspaces = Workspaces(tmp_path / "ws", keep=True)
    tree = _tree(workspaces, _task(agent_store, project, TaskStatus.CANCELED))
    assert remove_leftovers(workspaces, agent_store, "agent-a") == []
    assert tree.is_dir()


def test_a_tree_another_agent_is_making_is_kept(
    agent_store: TaskStore, project: Repo, tmp_path: Path
) -> None:
    """An agent sharing the folder holds the task's lock while it makes the tree: even a record
    read as ``queued`` (claimed just after the read) must not cost that agent its tree."""
    workspaces = Workspaces(tmp_path / "ws")
    task_id = _task(agent_store, project)
    tree = _tree(workspaces, task_id)
    making = FileLock(workspaces._task_lock(task_id), shared=True)
    assert making.try_acquire()
    try:
        assert remove_leftovers(workspaces, agent_store, "agent-a") == []
        assert tree.is_dir()
    finally:
        making.release()
    assert remove_leftovers(workspaces, agent_store, "agent-a") == [task_id]
    assert not tree.exists()


def _config(redis_url: str, tmp_path: Path, venv_cache: Path, **fields: object) -> AgentConfig:
    return agent_config(redis_url, tmp_path / "agent", venv_cache, **fields)


def test_an_agent_start_removes_the_trees_its_killed_run_left(
    redis_url: str, agent_store: TaskStore, project: Repo, tmp_path: Path, venv_cache: Path
) -> None:
    config = _config(redis_url, tmp_path, venv_cache)
    workspaces = Workspaces(config.workspace_path)
    lost = _running(agent_store, project, "agent-a")
    agent_store.redis.delete(keys.heartbeat(lost))
    other = _running(agent_store, project, "agent-b")  # another agent on this host, alive
    trees = [_tree(workspaces, lost), _tree(workspaces, other)]
    run_burst(dataclasses.replace(config, keep_workspaces=True))
    assert [tree.is_dir() for tree in trees] == [True, True]
    run_burst(config)
    assert [tree.is_dir() for tree in trees] == [False, True]


def test_a_tree_an_agent_kept_outlives_a_later_agent_that_keeps_none(
    redis_url: str, agent_store: TaskStore, project: Repo, tmp_path: Path, venv_cache: Path
) -> None:
    keeping = _config(redis_url, tmp_path, venv_cache, keep_workspaces=True)
    kept = enqueue(agent_store, project).id
    run_burst(keeping)
    workspaces = Workspaces(keeping.workspace_path)
    assert agent_store.get(kept).status is TaskStatus.FINISHED
    assert workspaces.task_dir(kept).is_dir() and workspaces.kept_mark(kept).exists()
    left = _tree(workspaces, _task(agent_store, project, TaskStatus.CANCELED))  # no mark
    plain = _config(redis_url, tmp_path, venv_cache, name="agent-b")
    ran = enqueue(agent_store, project).id
    run_burst(plain)  # cleans up at its start, then runs a task of its own
    assert agent_store.get(ran).status is TaskStatus.FINISHED
    assert workspaces.task_dir(kept).is_dir()
    assert not left.exists() and not workspaces.task_dir(ran).exists()
    assert remove_leftovers(Workspaces(keeping.workspace_path), agent_store, "agent-c") == []
    assert workspaces.task_dir(kept).is_dir()


def test_stray_task_processes_are_stopped_when_no_live_agent_runs_their_task(
    agent_store: TaskStore, project: Repo, tmp_path: Path
) -> None:
    workspaces = Workspaces(tmp_path / "ws")
    dead = _running(agent_store, project, "agent-c")
    agent_store.redis.delete(keys.heartbeat(dead))
    live = _running(agent_store, project, "agent-b")  # heartbeat alive: another agent's task
    procs = {}
    for task_id in (dead, live):
        tree = _tree(workspaces, task_id)
        (tree / "sub").mkdir()
        procs[task_id] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            cwd=tree / "sub",  # a task run in a folder of its tree
            env={**os.environ, "OVERNIGHT_TASK_ID": task_id},
            start_new_session=True,
        )
    try:
        time.sleep(0.3)  # the environment and cwd are readable once the interpreter runs
        removed = remove_leftovers(workspaces, agent_store, "agent-a")
        assert removed == [dead]
        assert procs[dead].wait(10) == -signal.SIGTERM
        assert procs[live].poll() is None
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_a_process_whose_agent_is_gone_is_stopped_and_its_task_lost_at_once(
    agent_store: TaskStore, project: Repo, tmp_path: Path
) -> None:
    """Heartbeat still alive, another agent's name: the agent's pid says it died."""
    workspaces = Workspaces(tmp_path / "ws")
    dead_agent = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_agent.wait()
    # Its agent agent-x was killed a moment ago: the heartbeat lives on for a while.
    orphan = submit(agent_store, make_snapshot(), TaskOptions(queue="q", retries=1)).id
    agent_store.transition(orphan, TaskStatus.RUNNING, Change(agent="agent-x"), heartbeat_ttl=600)
    watched = _running(agent_store, project, "agent-b")  # its agent, this process, is alive
    agent_store.heartbeat(watched, "agent-b", ttl=600)
    agents = {orphan: dead_agent.pid, watched: os.getpid()}
    procs = {}
    for task_id, agent_pid in agents.items():
        tree = _tree(workspaces, task_id)
        procs[task_id] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            cwd=tree,
            env={
                **os.environ,
                "OVERNIGHT_TASK_ID": task_id,
                "OVERNIGHT_AGENT": agent_store.get(task_id).agent or "",
                "OVERNIGHT_AGENT_PID": str(agent_pid),
            },
            start_new_session=True,
        )
    try:
        time.sleep(0.3)
        removed = remove_leftovers(workspaces, agent_store, "agent-a")
        assert procs[orphan].wait(10) == -signal.SIGTERM
        assert procs[watched].poll() is None
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    assert removed == [orphan]  # requeued, so its tree goes too
    again = agent_store.get(orphan)
    assert (again.status, again.attempt) == (TaskStatus.QUEUED, 1)
    assert [h.note for h in again.history][-2:] == [
        "agent agent-x died while the task was running, leaving its process running",
        "attempt 2 of 2, after agent agent-x died",
    ]
    assert agent_store.get(watched).status is TaskStatus.RUNNING
