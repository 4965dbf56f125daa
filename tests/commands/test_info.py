from __future__ import annotations

import json
import time

import redis

from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import invoke, make_snapshot


def test_queues_counts(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    ids = [submit(store, make_snapshot(), TaskOptions(queue="gpu")).id for _ in range(4)]
    submit(store, make_snapshot(), TaskOptions(queue="gpu", after=(ids[0],)))
    store.transition(ids[0], TaskStatus.RUNNING, Change(agent="box1"))
    store.transition(ids[3], TaskStatus.HELD)
    AgentRegistry(redis_client).register(AgentInfo(name="box1", host="h", queues=("gpu", "cpu")))
    rows = json.loads(invoke("queues", "--json").stdout)
    assert rows == [
        {"queue": "cpu", "queued": 0, "held": 0, "waiting": 0, "running": 0, "total": 0,
         "agents": ["box1"]},
        {"queue": "gpu", "queued": 2, "held": 1, "waiting": 1, "running": 1, "total": 5,
         "agents": ["box1"]},
    ]  # fmt: skip
    text = invoke("queues").stdout
    assert "gpu" in text and "box1" in text


def test_workers(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    assert "no live agents" in invoke("workers").stdout
    info = AgentInfo(
        name="box1", host="gpu-host", queues=("gpu",), gpus=("0", "1"), state="busy",
        tasks=("abc123abc123",), pid=42, started=time.time(),
        extra={"windows": {"state": "open until mon 07:00"},
               "slots": {"gpus": {"0": {"task": "abc123abc123"}, "1": {"unavailable": "9 GB used by pid 77"}}}},
    )  # fmt: skip
    AgentRegistry(redis_client).register(info)
    text = invoke("workers").stdout
    for part in ("box1", "gpu-host", "busy", "0,1", "abc123abc123", "ago", "open until mon 07:00",
                 "GPU 1 held back: 9 GB used by pid 77"):  # fmt: skip
        assert part in text
    [data] = json.loads(invoke("workers", "--json").stdout)
    assert data["name"] == "box1" and data["gpus"] == ["0", "1"]


def test_queues_verbose_shows_the_order_with_positions(cli_env: Repo, store: TaskStore) -> None:
    a, b, c = (submit(store, make_snapshot(), TaskOptions(queue="gpu")).id for _ in range(3))
    store.transition(b, TaskStatus.HELD)
    invoke("bump", c)
    data = json.loads(invoke("queues", "-v", "--json").stdout)
    assert [(p["position"], p["id"], p["status"]) for p in data["order"]] == [
        (1, c, "queued"),
        (2, a, "queued"),
        (0, b, "held"),
    ]
    lines = [line.split() for line in invoke("queues", "-v").stdout.splitlines()]
    assert ["gpu", "1", c, "queued"] in lines and ["gpu", "-", b, "held"] in lines


def test_workers_say_why_a_task_waits(cli_env: Repo, redis_client: redis.Redis) -> None:
    why = "agent box1: expected 3h (--expect), window closes in 1h20m"
    info = AgentInfo(name="box1", host="h", queues=("gpu",), extra={"waits": {"abc123abc123": why}})
    AgentRegistry(redis_client).register(info)
    assert "abc123abc123 waits: expected 3h (--expect), window closes in 1h20m" in (
        invoke("workers").stdout.replace("\n", "")
    )
