"""The agent's housekeeping: a run whose task was taken away is told, one whose end is being
written is left to that write."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import pytest
import redis

from overnight.agent.config import AgentConfig
from overnight.agent.run.logsink import LogSink
from overnight.agent.run.task import ActiveTask
from overnight.agent.service.housekeeping import Control
from overnight.agent.service.rqworker import AgentWorker
from overnight.notify.notifier import Notifier
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.records import Change, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import agent_config, enqueue
from tests.fixtures.gitrepo import Repo


def _control(config: AgentConfig, store: TaskStore, tasks: list[ActiveTask]) -> Control:
    client = store.redis
    blocking = redis.Redis(connection_pool=client.connection_pool)
    worker = AgentWorker(client, blocking, config.agent_name, config.queues)
    worker.register()
    registry = AgentRegistry(client)
    return Control(
        config,
        store,
        worker,
        registry,
        tasks=lambda: tasks,
        info=lambda: AgentInfo(name=config.agent_name, host="h", queues=config.queues),
    )


def _active(store: TaskStore, record: TaskRecord, tmp_path: Path) -> ActiveTask:
    sink = LogSink(functools.partial(store.logs.append, record.id), tmp_path / "spill.jsonl")
    return ActiveTask(record=store.get(record.id), gpu_ids=(), sink=sink)


@pytest.mark.parametrize("ended", [False, True])
def test_a_heartbeat_that_finds_the_task_moved_on_stops_the_run_unless_it_ended(
    agent_store: TaskStore,
    project: Repo,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
    ended: bool,
) -> None:
    config = agent_config(redis_url, tmp_path / "agent", venv_cache)
    record = enqueue(agent_store, project)
    agent_store.transition(record.id, TaskStatus.RUNNING, Change(agent="agent-a"))
    task = _active(agent_store, record, tmp_path)
    # Its own end was just written (ended), or it was declared lost meanwhile.
    final = TaskStatus.FINISHED if ended else TaskStatus.LOST
    agent_store.transition(record.id, final, Change(agent="agent-a"))
    if ended:
        task.ended.set()
    _control(config, agent_store, [task]).tick()
    assert task.taken.is_set() is not ended
    assert task.should_stop() is not ended
    if not ended:
        assert task.taken_why == (
            "agent agent-a's heartbeats of this run (attempt 1) lapsed, and the task went on "
            "without it: it is lost now, as attempt 1"
        )


class BrokenNotifier(Notifier):
    """A notifier with a bug in telling events."""

    def drain(self, most: int = 100) -> int:
        raise RuntimeError("a bug in telling")


def test_a_fault_in_telling_events_leaves_the_rest_of_housekeeping_to_run(
    agent_store: TaskStore, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    config = agent_config(redis_url, tmp_path, venv_cache, stray_interval=0.01)
    client = agent_store.redis
    worker = AgentWorker(client, redis.Redis(connection_pool=client.connection_pool), "a", ("q",))
    worker.register()
    looked = threading.Event()
    control = Control(
        config,
        agent_store,
        worker,
        AgentRegistry(client),
        tasks=list,
        info=lambda: AgentInfo(name="a", host="h", queues=("q",)),
        strays=looked.set,
        notifier=BrokenNotifier(agent_store, agent="a"),
    )
    time.sleep(0.02)  # the first look at strays is due
    control.tick()  # logs the bug, raises nothing
    assert looked.wait(5)
