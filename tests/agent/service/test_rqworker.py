from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from overnight.agent.service.rqworker import AgentWorker
from overnight.errors import AgentError
from tests.fixtures.agents import agent_config, run_burst
from tests.fixtures.hostile import canary_module, listener

ENTRY = "overnight.queue.jobs.run_task"


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def blocking(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    yield client
    client.close()


def push(conn: redis.Redis, queue: str, job_id: str, func: str = ENTRY) -> None:
    Queue(queue, connection=conn, serializer=JSONSerializer).enqueue(
        func, job_id, job_id=job_id, job_timeout=-1
    )


def test_registered_worker_is_what_rq_lists(conn: redis.Redis, blocking: redis.Redis) -> None:
    worker = AgentWorker(conn, blocking, "box-1", ["gpu", "cpu"])
    worker.register()
    listed = {w.name: w for w in Worker.all(connection=conn, serializer=JSONSerializer)}
    assert listed["box-1"].queue_names() == ["gpu", "cpu"]
    worker.unregister()
    assert "box-1" not in {w.name for w in Worker.all(connection=conn)}


def test_first_queue_named_has_priority(conn: redis.Redis, blocking: redis.Redis) -> None:
    push(conn, "cpu", "c1")
    push(conn, "gpu", "g1")
    worker = AgentWorker(conn, blocking, "box", ["gpu", "cpu"])
    first, second = worker.dequeue(None), worker.dequeue(None)
    assert first is not None and second is not None
    assert (first.job_id, second.job_id) == ("g1", "c1")
    assert worker.dequeue(None) is None


def test_blocking_pop_wakes_when_a_job_is_pushed(conn: redis.Redis, blocking: redis.Redis) -> None:
    worker = AgentWorker(conn, blocking, "box", ["gpu"])
    pusher = threading.Timer(0.2, push, args=(conn, "gpu", "late"))
    pusher.start()
    claim = worker.dequeue(20.0)
    pusher.join()
    assert claim is not None and claim.job_id == "late"


def test_skipped_queues_are_left_alone(conn: redis.Redis, blocking: redis.Redis) -> None:
    push(conn, "gpu", "g1")
    push(conn, "cpu", "c1")
    worker = AgentWorker(conn, blocking, "box", ["gpu", "cpu"])
    claim = worker.dequeue(None, skip={"gpu"})
    assert claim is not None and claim.job_id == "c1"
    assert worker.dequeue(None, skip={"gpu", "cpu"}) is None


def test_refused_job_is_failed_in_rq_and_never_run(
    conn: redis.Redis, blocking: redis.Redis
) -> None:
    push(conn, "gpu", "evil", func="os.system")
    worker = AgentWorker(conn, blocking, "box", ["gpu"])
    worker.register()
    claim = worker.dequeue(None)
    assert claim is not None
    worker.refuse(claim, "refused: not overnight")
    queue = Queue("gpu", connection=conn, serializer=JSONSerializer)
    assert queue.failed_job_registry.get_job_ids() == ["evil"]
    assert conn.llen(queue.intermediate_queue_key) == 0


def test_push_back_returns_the_job_to_the_front(conn: redis.Redis, blocking: redis.Redis) -> None:
    push(conn, "gpu", "a")
    push(conn, "gpu", "b")
    worker = AgentWorker(conn, blocking, "box", ["gpu"])
    claim = worker.dequeue(None)
    assert claim is not None
    worker.push_back(claim)
    again = worker.dequeue(None)
    assert again is not None and again.job_id == "a"


def test_take_pops_one_job_from_mid_queue_leaving_the_others_in_place(
    conn: redis.Redis, blocking: redis.Redis
) -> None:
    for job_id in ("a", "b", "c"):
        push(conn, "gpu", job_id)
    worker = AgentWorker(conn, blocking, "box", ["gpu"])
    claim = worker.take("gpu", "b")
    assert claim is not None and claim.job_id == "b" and claim.queue.name == "gpu"
    queue = Queue("gpu", connection=conn, serializer=JSONSerializer)
    assert queue.job_ids == ["a", "c"]
    assert queue.intermediate_queue.get_job_ids() == ["b"]  # as RQ's own pop leaves it
    worker.drop(claim)
    assert worker.take("gpu", "b") is None


def test_agents_taking_the_same_job_at_once_get_it_once(
    conn: redis.Redis, blocking: redis.Redis, redis_url: str
) -> None:
    for n in range(40):
        push(conn, "gpu", f"j{n}")
    got: list[str] = []
    start = threading.Barrier(4)

    def agent(name: str) -> None:
        client = redis.Redis.from_url(redis_url)
        worker = AgentWorker(client, client, name, ["gpu"])
        start.wait()
        try:
            for n in range(40):  # half by a mid-list take, half by RQ's own pop from the head
                claim = worker.take("gpu", f"j{n}") if n % 2 else worker.dequeue(None)
                if claim is not None:
                    got.append(claim.job_id)
        finally:
            client.close()

    threads = [threading.Thread(target=agent, args=(f"box{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(got) == sorted(f"j{n}" for n in range(40))


def test_a_live_namesake_is_an_error_a_stale_one_is_replaced(
    conn: redis.Redis, blocking: redis.Redis
) -> None:
    AgentWorker(conn, blocking, "box", ["gpu"]).register()
    with pytest.raises(AgentError, match="already running"):
        AgentWorker(conn, blocking, "box", ["gpu"]).register()
    AgentWorker(conn, blocking, "box", ["gpu"], stale_after=0.0).register()


def test_heartbeat_re_registers_after_redis_lost_its_data(
    conn: redis.Redis, blocking: redis.Redis
) -> None:
    worker = AgentWorker(conn, blocking, "box", ["gpu"])
    worker.register()
    conn.flushdb()
    worker.heartbeat("idle")
    listed = {w.name: w for w in Worker.all(connection=conn)}
    assert listed["box"].queue_names() == ["gpu"]


def test_a_namesake_whose_process_died_on_this_host_is_replaced(
    conn: redis.Redis, blocking: redis.Redis
) -> None:
    import subprocess
    import sys

    AgentWorker(conn, blocking, "box", ["gpu"]).register()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    conn.hset("rq:worker:box", "pid", dead.stdout.strip())
    AgentWorker(conn, blocking, "box", ["gpu"]).register()


@pytest.mark.slow
def test_an_agent_refuses_a_foreign_job_without_its_webhooks_or_callbacks(
    conn: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module, canary = canary_module(tmp_path, monkeypatch)
    with listener() as (url, requests):
        hook = Webhook(url, "failed", method="POST", headers={"X-Secret": "agent"})
        job = Queue("q", connection=conn, serializer=JSONSerializer).enqueue_call(
            "os.system",
            args=(f"touch {tmp_path / 'ran'}",),
            on_failure=Callback(f"{module}.on_failure"),
            webhooks=[hook],
        )
        run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
        assert requests == []
    assert not canary.exists() and not (tmp_path / "ran").exists()
    job = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.FAILED
    result = job.latest_result()
    assert result is not None and "names function 'os.system'" in str(result.exc_string)
    queue = Queue("q", connection=conn, serializer=JSONSerializer)
    assert queue.failed_job_registry.get_job_ids() == [job.id]
    assert job.ended_at is not None
