"""The agent's notifier against real Redis, a real HTTP listener and real agents: one message
per event however many agents, retries off the task's path, failed deliveries noted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overnight.agent.config import AgentConfig
from overnight.notify.messages import Message
from overnight.notify.notifier import Notifier
from overnight.queue import keys
from overnight.queue.cancel import request_cancel
from overnight.queue.failures import FailureKind
from overnight.queue.reaper import reap_lost
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit, submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import Background, agent_config, make_daemon, wait_for, wait_status
from tests.fixtures.gitrepo import Repo
from tests.fixtures.listeners import Webhook
from tests.fixtures.tasks import finish, make_snapshot

TRAIN = """\
import sys
lr = float(sys.argv[sys.argv.index("--lr") + 1])
print(f"loss: {lr}", flush=True)
sys.exit(3 if lr > 0.5 else 0)
"""


@pytest.fixture
def notifier(agent_store: TaskStore) -> Iterator[Notifier]:
    made = Notifier(agent_store, agent="agent-a", tries=3, backoff=0.05)
    yield made
    made.close()


def _config(redis_url: str, tmp_path: Path, venv_cache: Path, **fields: object) -> AgentConfig:
    return agent_config(redis_url, tmp_path / "agent", venv_cache, notify_backoff=0.05, **fields)


def test_two_agents_racing_for_one_event_send_one_message(
    agent_store: TaskStore, webhook: Webhook
) -> None:
    senders = [Notifier(agent_store, agent=f"agent-{n}") for n in range(2)]
    message = Message(title="overnight: sweep 3f ended", text="2 finished", key="sweep:3f")
    start = threading.Barrier(len(senders))
    sent: list[bool] = []

    def race(sender: Notifier) -> None:
        start.wait()
        sent.append(sender.send(message, [webhook.url()]))

    threads = [threading.Thread(target=race, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sender in senders:
        sender.close()
    assert sorted(sent) == [False, True]
    assert len(webhook.requests) == 1
    assert agent_store.redis.pttl(keys.notified("sweep:3f")) > 0  # the claim expires, in time


def test_delivery_runs_off_the_callers_path(notifier: Notifier, webhook: Webhook) -> None:
    webhook.gate.clear()  # the listener holds every request unanswered
    message = Message(title="t", text="x", key="slow")
    assert notifier.send(message, [webhook.url()])  # returns while the POST waits
    assert webhook.requests == []  # recorded only once answered: the send did not wait for it
    webhook.gate.set()
    wait_for(lambda: webhook.requests, what="the held request")


def test_a_failed_delivery_is_retried_then_succeeds(
    agent_store: TaskStore, notifier: Notifier, webhook: Webhook
) -> None:
    task = submit(agent_store, make_snapshot(), TaskOptions())
    webhook.statuses = [500, 503]
    notifier.send(Message(title="t", text="x", key="retried", task_id=task.id), [webhook.url()])
    wait_for(lambda: len(webhook.requests) == 3, what="three tries")
    notifier.close()
    assert agent_store.get(task.id).notes == []


def test_a_delivery_that_keeps_failing_is_noted_without_the_secret(
    agent_store: TaskStore, notifier: Notifier, webhook: Webhook
) -> None:
    task = submit(agent_store, make_snapshot(), TaskOptions())
    webhook.statuses = [500, 500, 500]
    notifier.send(Message(title="t", text="x", key="doomed", task_id=task.id), [webhook.url()])
    wait_for(lambda: agent_store.get(task.id).notes, what="the note")
    (note,) = agent_store.get(task.id).notes
    port = webhook.server.server_address[1]
    assert note == (
        f"notification (t) to http://127.0.0.1:{port}/… failed after 3 tries: "
        f"http://127.0.0.1:{port}/… answered HTTP 500"
    )
    assert "SECRET" not in note
    assert agent_store.get(task.id).status is TaskStatus.QUEUED  # the task is none the worse


def test_a_sweep_is_told_once_when_its_last_task_ends(
    agent_store: TaskStore, notifier: Notifier, webhook: Webhook
) -> None:
    options = TaskOptions(notify=(webhook.url(),), notify_metric="-acc")
    sweep = [Sweep("lr", ("1", "2", "3"))]
    first, second, third = submit_sweep(agent_store, make_snapshot(), options, sweep)
    finish(agent_store, first.id, acc=0.7)
    assert notifier.drain() == 1
    assert webhook.requests == []  # two not yet final
    finish(agent_store, second.id, acc=0.9)
    request_cancel(agent_store, third.id)  # the CLI ends the last one: an agent still tells
    assert notifier.drain() == 1  # the two ends are one event
    assert notifier.drain() == 0
    notifier.sweep_changed(str(first.sweep))  # looked at again: told once all the same
    notifier.close()
    (text,) = webhook.texts()
    assert f"sweep {first.sweep} ended: 3 task(s): 2 finished, 1 canceled" in text
    assert f"best by acc: {second.id}" in text and "= 0.9" in text
    assert agent_store.redis.exists(keys.notified(f"sweep:{first.sweep}:3"))


def test_a_task_the_cli_reaped_is_told_by_an_agent(
    agent_store: TaskStore, notifier: Notifier, webhook: Webhook
) -> None:
    task = submit(agent_store, make_snapshot(), TaskOptions(notify=(webhook.url(),)))
    agent_store.transition(task.id, TaskStatus.RUNNING, Change(agent="ghost"), heartbeat_ttl=0.05)
    wait_for(lambda: reap_lost(agent_store, settle=0), what="the reap")
    agent_store.redis.sadd(keys.UNTOLD, "lost:../../etc", "sweep:*")  # not ids: passed over
    assert notifier.drain() == 3
    notifier.close()
    (text,) = webhook.texts()
    assert "agent ghost lost" in text and task.id in text


@pytest.mark.slow
def test_a_sweep_run_by_two_real_agents_is_told_once_with_its_best_run_and_its_failure(
    agent_store: TaskStore,
    project: Repo,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
    webhook: Webhook,
) -> None:
    project.write("train.py", TRAIN)
    project.commit("train")
    project.push()
    snapshot = take_snapshot(project.path, ["python", "train.py", "--lr", "0.1"], SnapshotOptions())
    options = TaskOptions(queue="q", notify=(webhook.url(),), notify_metric="loss")
    records = submit_sweep(agent_store, snapshot, options, [Sweep("lr", ("0.3", "0.1", "0.9"))])
    agents = [
        Background(make_daemon(_config(redis_url, tmp_path, venv_cache, name=f"agent-{n}")))
        for n in "ab"
    ]
    try:
        for record in records:
            wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        wait_for(lambda: len(webhook.requests) >= 2, what="the sweep's messages")
    finally:
        for agent in agents:
            agent.stop()  # its notifier's queue delivered: whatever either would send is here
    texts = webhook.texts()
    ended = [t for t in texts if "ended:" in t]
    failed = [t for t in texts if "failed in run" in t]
    assert len(ended) == 1 and len(failed) == 1 and len(texts) == 2
    best = records[1]
    assert "3 task(s): 2 finished, 1 failed" in ended[0]
    assert f"best by loss: {best.id}" in ended[0] and f"{best.id} lr=0.1 = 0.1" in ended[0]
    assert f"failed [run failure] {records[2].id} lr=0.9" in ended[0]
    assert f"task {records[2].id}" in failed[0] and "exited with 3" in failed[0]
    assert agent_store.get(records[2].id).failure is FailureKind.RUN


@pytest.mark.slow
def test_a_lost_agent_is_told_to_its_tasks_targets_and_the_agents_own(
    agent_store: TaskStore, redis_url: str, tmp_path: Path, venv_cache: Path, webhook: Webhook
) -> None:
    task = submit(agent_store, make_snapshot(), TaskOptions(queue="far", notify=(webhook.url(),)))
    agent_store.redis.delete("rq:queue:far")
    agent_store.transition(task.id, TaskStatus.RUNNING, Change(agent="ghost"), heartbeat_ttl=0.05)
    config = _config(
        redis_url,
        tmp_path,
        venv_cache,
        notify=(webhook.url("/agents"),),
        smtp_host="127.0.0.1",
        smtp_password=PASSWORD,
    )
    agent = Background(make_daemon(config))
    try:
        wait_for(lambda: len(webhook.requests) >= 2, timeout=30, what="word of the lost agent")
    finally:
        agent.stop()
    assert sorted(r.path for r in webhook.requests) == ["/agents", "/hook/T000/SECRET"]
    assert all("agent ghost lost" in text for text in webhook.texts())
    assert all(task.id in text for text in webhook.texts())
    assert agent_store.get(task.id).failure is FailureKind.INFRA
    assert not [key for key, value in redis_values(agent_store) if PASSWORD.encode() in value]


PASSWORD = "pw-never-in-redis-7f3a"


def redis_values(store: TaskStore) -> list[tuple[bytes, bytes]]:
    """Every key of the queue's Redis with each value it holds, whatever its type."""
    out: list[tuple[bytes, bytes]] = []
    client = store.redis
    for key in client.scan_iter():
        kind = client.type(key)
        values: list[Any]
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == b"list":
            values = list(client.lrange(key, 0, -1))
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = list(client.zrange(key, 0, -1))
        else:
            values = [repr(client.xrange(key)).encode()]
        out.extend((bytes(key), bytes(value)) for value in values)
    return out
