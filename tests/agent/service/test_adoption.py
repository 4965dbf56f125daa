"""A restarted docker agent takes back its containers: what happened while it was down counts."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from overnight.queue.cancel import request_cancel
from overnight.queue.records import Phase, TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import (
    agent_config,
    enqueue,
    log_text,
    start_agent,
    wait_for,
    wait_status,
)
from tests.fixtures.gitrepo import Repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_restarted_agent_reports_an_exit_and_stops_a_task_canceled_meanwhile(
    agent_store: TaskStore, redis_url: str, project: Repo, tmp_path: Path, docker_sandbox: Any
) -> None:
    config = agent_config(
        redis_url,
        tmp_path / "agent",
        tmp_path / "agent" / "envs",
        # the restart comes well before anyone could declare the tasks lost
        **docker_sandbox.agent_settings(cpu_slots=2, lost_ttl=30.0),
    )
    exits = enqueue(agent_store, project, "--wait-for", "go", "--exit", "3")
    canceled = enqueue(agent_store, project, "--ticks", "1000")
    first = start_agent(config, tmp_path, "--queue", "q")
    second = None
    try:
        wait_for(lambda: "tick 2" in log_text(agent_store, canceled.id), what="ticks")
        wait_for(lambda: "pid=" in log_text(agent_store, exits.id), what="the waiting task")
        first.kill()
        (tmp_path / "agent" / "workspaces" / "tasks" / exits.id / "go").touch()
        (container,) = docker_sandbox.client.containers.list(
            all=True, filters={"label": f"overnight.task={exits.id}"}
        )
        assert container.wait(timeout=30)["StatusCode"] == 3  # it ended with no agent
        request_cancel(agent_store, canceled.id)
        assert agent_store.get(canceled.id).status is TaskStatus.RUNNING

        second = start_agent(config, tmp_path, "--queue", "q", "--burst")
        reported = wait_status(agent_store, exits.id, TaskStatus.FAILED, TaskStatus.FINISHED)
        stopped = wait_status(agent_store, canceled.id, TaskStatus.CANCELED, TaskStatus.FAILED)
        assert second.wait() == 0, second.output()
    finally:
        for agent in (first, second):
            if agent is not None:
                agent.kill()
    assert (reported.status, reported.exit_code, reported.attempt) == (TaskStatus.FAILED, 3, 0)
    assert reported.error == "exited with 3 (last output: done)"
    lines = log_text(agent_store, exits.id).splitlines()
    assert "done" in lines and any("exited with 3, adopted" in line for line in lines)
    assert (stopped.status, stopped.phase) == (TaskStatus.CANCELED, Phase.RUN)
    assert stopped.exit_code == 128 + signal.SIGTERM  # stopped within the grace, not killed
    assert any(
        "still running, adopted" in line for line in log_text(agent_store, canceled.id).splitlines()
    )
    label = f"overnight.agent={docker_sandbox.agent_name}"
    assert docker_sandbox.client.containers.list(all=True, filters={"label": label}) == []


METRICS = """\
import sys, time
from pathlib import Path
for step in range(5):
    print(f"step={step} loss={100 - step}", flush=True)
print("waiting", flush=True)
while not Path("go").exists():
    time.sleep(0.05)
print("step=9 loss=0.5", flush=True)
"""


def test_a_restarted_agent_goes_on_with_the_metrics_of_the_run_it_adopts(
    agent_store: TaskStore, redis_url: str, project: Repo, tmp_path: Path, docker_sandbox: Any
) -> None:
    config = agent_config(
        redis_url,
        tmp_path / "agent",
        tmp_path / "agent" / "envs",
        **docker_sandbox.agent_settings(lost_ttl=30.0, report_interval=0.2),
    )
    snap = take_snapshot(project.path, ["python", "-c", METRICS], SnapshotOptions())
    record = enqueue(agent_store, project, snapshot=snap)
    first = start_agent(config, tmp_path, "--queue", "q")
    second = None
    try:
        wait_for(
            lambda: (m := agent_store.get(record.id).metrics.get("loss")) and m.count == 5,
            what="the first agent's report of the metrics",
        )
        first.kill()
        (tmp_path / "agent" / "workspaces" / "tasks" / record.id / "go").touch()
        second = start_agent(config, tmp_path, "--queue", "q", "--burst")
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        assert second.wait() == 0, second.output()
    finally:
        for agent in (first, second):
            if agent is not None:
                agent.kill()
    assert done.status is TaskStatus.FINISHED, done.error
    loss = done.metrics["loss"]
    assert (loss.count, loss.last, loss.last_step, loss.max, loss.max_step) == (6, 0.5, 9, 100, 0)
    steps = [step for _, step, _ in agent_store.metric_series(record.id)["loss"]]
    assert steps == [0, 1, 2, 3, 4, 9]
