"""A Redis failover under a real agent: the master is SIGKILLed mid-sweep, Sentinel promotes the
replica, and the sweep ends as if Redis had only been away for a moment."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from overnight.agent.service.reconnect import Backoff, until_connected
from overnight.queue.connection import acks_for, connect
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import agent_config, enqueue, log_text, start_agent, wait_for
from tests.fixtures.gitrepo import Repo
from tests.fixtures.sentinel import SentinelDeployment, sentinel_deployment

__all__ = ["sentinel_deployment"]

pytestmark = pytest.mark.slow

TASKS = 8
TICKS = 10


def test_a_sweep_survives_the_master_killed_mid_sweep(
    sentinel_deployment: SentinelDeployment, project: Repo, tmp_path: Path, venv_cache: Path
) -> None:
    url = sentinel_deployment.url
    store = TaskStore(connect(url), acks=acks_for(url))
    ledger = tmp_path / "ledger"
    # lost_ttl outlasts the failover (about 3 s here), as a deployment's must.
    config = agent_config(url, tmp_path / "agent", venv_cache, lost_ttl=15.0, cpu_slots=3)
    records = [
        enqueue(store, project, "--marker", str(ledger), "--ticks", str(TICKS), name=f"t{i}")
        for i in range(TASKS)
    ]
    agent = start_agent(config, tmp_path, "--queue", "q")
    backoff = Backoff(longest=0.5)

    def statuses() -> collections.Counter[TaskStatus]:
        found = until_connected(lambda: store.get_many([r.id for r in records]), backoff)
        return collections.Counter(r.status for r in found or [])

    try:
        wait_for(
            lambda: statuses()[TaskStatus.FINISHED] >= 1 and statuses()[TaskStatus.RUNNING] >= 1,
            what="the sweep to be under way",
        )
        old = sentinel_deployment.kill_master().port
        sentinel_deployment.wait_for_failover(old)
        try:
            wait_for(lambda: statuses()[TaskStatus.FINISHED] == TASKS, timeout=50)
        except BaseException:
            print(statuses(), agent.output())  # what ended how, and what the agent said
            raise
        ended: list[TaskRecord] = store.get_many([r.id for r in records])
        assert {r.attempt for r in ended} == {0}, "a task was retried"
        runs = collections.Counter(ledger.read_text().split())
        assert runs == {r.id: 1 for r in records}, "a task ran twice or never"
        for record in records:
            lines = log_text(store, record.id).splitlines()
            ticks = [line for line in lines if line.startswith("tick ")]
            assert sorted(set(ticks)) == sorted(f"tick {n}" for n in range(TICKS)), lines
            assert "done" in lines
    finally:
        agent.kill()
        store.redis.close()
    assert "Traceback" not in agent.output()
