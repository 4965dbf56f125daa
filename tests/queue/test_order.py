from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import DeferredJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from overnight.errors import InvalidTransition, UsageError
from overnight.queue import keys, order
from overnight.queue.cancel import request_cancel
from overnight.queue.order import Selection
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    log_text,
    make_daemon,
    snapshot_of,
    wait_status,
)
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import make_snapshot


def _queue(redis_client: redis.Redis, name: str = "q") -> Queue:
    return Queue(name, connection=redis_client, serializer=JSONSerializer)


def _tasks(store: TaskStore, n: int, *, queue: str = "q", tag: str = "") -> list[str]:
    tags = (tag,) if tag else ()
    return [
        submit_many(store, [Submission(make_snapshot(), TaskOptions(queue=queue), tags=tags)])[0].id
        for _ in range(n)
    ]


def _take(store: TaskStore, redis_client: redis.Redis, queue: str = "q") -> str:
    """What an agent does: pop the head from RQ, then claim the record."""
    popped = Queue.dequeue_any(
        [_queue(redis_client, queue)], None, connection=redis_client, serializer=JSONSerializer
    )
    assert popped is not None
    job, _ = popped
    store.transition(
        job.id, TaskStatus.PREPARING, Change(agent="a"), expect={TaskStatus.QUEUED}, on_queue=queue
    )
    return str(job.id)


def test_bump_puts_named_tasks_first_in_the_order_given(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b, c, d = _tasks(store, 4)
    outcome = order.bump(store, Selection(ids=(d, c[:6])))
    assert outcome.changed == (d, c)
    assert _queue(redis_client).job_ids == [d, c, a, b]
    assert order.queue_order(store, "q") == [d, c, a, b]


def test_bump_by_tag_keeps_the_tagged_tasks_order_and_skips_others(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b = _tasks(store, 2)
    x, y = _tasks(store, 2, tag="baseline")
    store.transition(y, TaskStatus.PREPARING, Change(agent="a"))
    outcome = order.bump(store, Selection(tag="baseline"))
    assert outcome.changed == (x,)
    assert _queue(redis_client).job_ids == [x, a, b]
    named = order.bump(store, Selection(ids=(y,)))
    assert named.skipped == ((y, "it is preparing, not queued"),)


def test_a_selection_names_its_tasks() -> None:
    with pytest.raises(UsageError, match="--tag"):
        Selection()


def test_held_task_leaves_rq_queue_for_the_deferred_registry(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b, c = _tasks(store, 3)
    assert order.hold(store, Selection(ids=(b,))).changed == (b,)
    assert store.get(b).status is TaskStatus.HELD
    assert _queue(redis_client).job_ids == [a, c]
    assert DeferredJobRegistry("q", connection=redis_client).get_job_ids() == [b]
    job = Job.fetch(b, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.DEFERRED
    assert _take(store, redis_client) == a
    assert _take(store, redis_client) == c
    assert _queue(redis_client).job_ids == []
    assert order.hold(store, Selection(ids=(a,))).skipped == ((a, "it is preparing, not queued"),)


def test_release_puts_a_task_back_where_it_stood(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b, c, d = _tasks(store, 4)
    order.hold(store, Selection(ids=(b,)))
    (e,) = _tasks(store, 1)
    assert _take(store, redis_client) == a
    assert order.release(store, Selection(ids=(b,))).changed == (b,)
    assert _queue(redis_client).job_ids == [b, c, d, e]
    assert Job.fetch(b, connection=redis_client, serializer=JSONSerializer).get_status() == (
        JobStatus.QUEUED
    )
    assert DeferredJobRegistry("q", connection=redis_client).get_job_ids() == []
    assert not redis_client.exists(keys.held_place(b))


def test_release_goes_before_the_first_task_still_behind_it(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b, c, d = _tasks(store, 4)
    order.hold(store, Selection(ids=(a,)))
    order.bump(store, Selection(ids=(d,)))  # d is now ahead of b and c
    assert _take(store, redis_client) == d
    assert _take(store, redis_client) == b
    order.release(store, Selection(ids=(a,)))
    assert _queue(redis_client).job_ids == [a, c]


def test_release_when_everything_behind_it_ran_goes_to_the_front(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b = _tasks(store, 2)
    order.hold(store, Selection(ids=(a,)))
    assert _take(store, redis_client) == b
    (late,) = _tasks(store, 1)
    order.release(store, Selection(ids=(a,)))
    assert _queue(redis_client).job_ids == [a, late]


def test_release_of_the_last_task_goes_to_the_back(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b = _tasks(store, 2)
    order.hold(store, Selection(ids=(b,)))
    (late,) = _tasks(store, 1)
    order.release(store, Selection(ids=(b,)))
    assert _queue(redis_client).job_ids == [a, late, b]


def test_hold_and_release_by_tag(store: TaskStore, redis_client: redis.Redis) -> None:
    (a,) = _tasks(store, 1)
    (b,) = _tasks(store, 1, tag="half")
    (c,) = _tasks(store, 1)
    (d,) = _tasks(store, 1, tag="half")
    assert set(order.hold(store, Selection(tag="half")).changed) == {b, d}
    assert _queue(redis_client).job_ids == [a, c]
    assert order.release(store, Selection(tag="half")).changed == (b, d)
    assert _queue(redis_client).job_ids == [a, b, c, d]


def test_hold_of_a_task_an_agent_just_popped_wins_over_its_claim(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b = _tasks(store, 2)
    popped = Queue.dequeue_any(
        [_queue(redis_client)], None, connection=redis_client, serializer=JSONSerializer
    )
    assert popped is not None and popped[0].id == a
    order.hold(store, Selection(ids=(a,)))
    with pytest.raises(InvalidTransition):
        store.transition(a, TaskStatus.PREPARING, Change(agent="x"), expect={TaskStatus.QUEUED})
    assert _queue(redis_client).intermediate_queue.get_job_ids() == []
    order.release(store, Selection(ids=(a,)))
    assert _queue(redis_client).job_ids == [a, b]  # it was at the head when held


def test_move_to_another_queue_keeps_rq_and_the_indexes_true(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b = _tasks(store, 2)
    (g,) = _tasks(store, 1, queue="gpu")
    order.hold(store, Selection(ids=(b,)))
    outcome = order.move(store, Selection(ids=(a, b)), "gpu", at_front=True)
    assert set(outcome.changed) == {a, b}
    assert _queue(redis_client).job_ids == []
    assert _queue(redis_client, "gpu").job_ids == [a, g]
    assert DeferredJobRegistry("gpu", connection=redis_client).get_job_ids() == [b]
    assert DeferredJobRegistry("q", connection=redis_client).get_job_ids() == []
    job = Job.fetch(a, connection=redis_client, serializer=JSONSerializer)
    assert job.origin == "gpu"
    assert store.get(a).options.queue == "gpu" and store.get(b).status is TaskStatus.HELD
    assert store.index.count("gpu") == 3 and store.index.count("q") == 0
    assert "gpu" in store.known_queues()
    order.release(store, Selection(ids=(b,)))
    assert _queue(redis_client, "gpu").job_ids == [a, g, b]


def test_move_refuses_started_tasks_and_bad_names(store: TaskStore) -> None:
    (a,) = _tasks(store, 1)
    store.transition(a, TaskStatus.PREPARING, Change(agent="x"))
    assert order.move(store, Selection(ids=(a,)), "gpu").skipped == (
        (a, "it is preparing, not queued or held"),
    )
    assert store.get(a).options.queue == "q"
    with pytest.raises(UsageError, match="invalid queue name"):
        order.move(store, Selection(ids=(a,)), "no spaces")


def test_claim_of_a_task_moved_since_its_pop_is_refused(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    (a,) = _tasks(store, 1)
    Queue.dequeue_any(
        [_queue(redis_client)], None, connection=redis_client, serializer=JSONSerializer
    )
    order.move(store, Selection(ids=(a,)), "gpu")
    with pytest.raises(InvalidTransition, match="moved"):
        store.transition(
            a, TaskStatus.PREPARING, Change(agent="x"), expect={TaskStatus.QUEUED}, on_queue="q"
        )
    assert _queue(redis_client, "gpu").job_ids == [a]


def test_a_held_task_can_be_canceled(store: TaskStore, redis_client: redis.Redis) -> None:
    (a,) = _tasks(store, 1)
    order.hold(store, Selection(ids=(a,)))
    assert request_cancel(store, a).status is TaskStatus.CANCELED
    assert DeferredJobRegistry("q", connection=redis_client).get_job_ids() == []
    assert not redis_client.exists(keys.held_place(a))


def test_enqueue_at_front_keeps_a_sweeps_order(store: TaskStore, redis_client: redis.Redis) -> None:
    (a,) = _tasks(store, 1)
    subs = [Submission(make_snapshot(), TaskOptions(queue="q")) for _ in range(2)]
    x, y = (r.id for r in submit_many(store, subs, at_front=True))
    assert _queue(redis_client).job_ids == [x, y, a]


def test_agents_and_holds_racing_take_or_hold_each_task_once(
    store: TaskStore, redis_client: redis.Redis, redis_url: str
) -> None:
    ids = _tasks(store, 60)
    taken: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def agent() -> None:
        client = redis.Redis.from_url(redis_url)
        own = TaskStore(client)
        start.wait()
        try:
            while True:
                popped = Queue.dequeue_any(
                    [_queue(client)], None, connection=client, serializer=JSONSerializer
                )
                if popped is None:
                    return
                job_id = str(popped[0].id)
                try:
                    own.transition(
                        job_id, TaskStatus.PREPARING, Change(agent="a"), expect={TaskStatus.QUEUED}
                    )
                except InvalidTransition:
                    client.lrem(_queue(client).intermediate_queue_key, 1, job_id)
                    continue
                with lock:
                    taken.append(job_id)
        finally:
            client.close()

    held: list[str] = []

    def holder(part: list[str]) -> None:
        client = redis.Redis.from_url(redis_url)
        start.wait()
        try:
            for task_id in part:
                held.extend(order.hold(TaskStore(client), Selection(ids=(task_id,))).changed)
        finally:
            client.close()

    threads = [threading.Thread(target=agent) for _ in range(3)]
    threads += [threading.Thread(target=holder, args=(ids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken + held) == sorted(ids)
    assert len(set(taken)) == len(taken)
    records = {r.id: r for r in store.get_many(ids)}
    assert all(records[t].status is TaskStatus.PREPARING for t in taken)
    assert all(records[t].status is TaskStatus.HELD for t in held)
    assert set(DeferredJobRegistry("q", connection=redis_client).get_job_ids()) == set(held)
    started = StartedJobRegistry("q", connection=redis_client).get_job_ids(cleanup=False)
    assert set(started) == set(taken)
    assert _queue(redis_client).job_ids == []
    assert _queue(redis_client).intermediate_queue.get_job_ids() == []


@pytest.mark.slow
def test_real_agents_never_run_a_task_held_while_they_take_tasks(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    snapshot = snapshot_of(project, "--sleep", "0.05")
    tasks = [enqueue(agent_store, project, snapshot=snapshot).id for _ in range(16)]
    agents = [
        Background(
            make_daemon(
                agent_config(redis_url, tmp_path / name, venv_cache, name=name, cpu_slots=2)
            )
        )
        for name in ("agent-a", "agent-b")
    ]
    try:
        held = [t for t in tasks if order.hold(agent_store, Selection(ids=(t,))).changed]
        for task_id in set(tasks) - set(held):
            wait_status(agent_store, task_id, TaskStatus.FINISHED)
        for task_id in held:
            record = agent_store.get(task_id)
            assert record.status is TaskStatus.HELD
            assert all(h.status is not TaskStatus.PREPARING for h in record.history)
            assert not log_text(agent_store, task_id)
        assert held, "every task was taken before a hold: the race was not run"
        order.release(agent_store, Selection(ids=tuple(held)))
        for task_id in held:
            wait_status(agent_store, task_id, TaskStatus.FINISHED)
    finally:
        for agent in agents:
            agent.stop()
