from __future__ import annotations

import pytest
import redis

from overnight.errors import InvalidTransition, UnknownQueue
from overnight.queue.cancel import cancel_queue, request_cancel
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.tasks import make_snapshot


def test_queued_task_leaves_its_queue(store: TaskStore, redis_client: redis.Redis) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    canceled = request_cancel(store, record.id)
    assert canceled.status is TaskStatus.CANCELED and canceled.ended is not None
    assert redis_client.llen("rq:queue:gpu") == 0
    assert not store.cancel_requested(record.id)


def test_running_task_is_flagged_for_its_agent(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    flagged = request_cancel(store, record.id)
    assert flagged.status is TaskStatus.RUNNING
    assert store.cancel_requested(record.id)
    assert flagged.notes == ["cancel requested while running"]
    store.transition(record.id, TaskStatus.CANCELED)
    assert not store.cancel_requested(record.id)


def test_final_task_cannot_be_canceled(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    request_cancel(store, record.id)
    with pytest.raises(InvalidTransition, match="already canceled"):
        request_cancel(store, record.id)


def test_cancel_a_whole_queue(store: TaskStore) -> None:
    gpu = [submit(store, make_snapshot(), TaskOptions(queue="gpu")) for _ in range(3)]
    cpu = submit(store, make_snapshot(), TaskOptions(queue="cpu"))
    store.transition(gpu[0].id, TaskStatus.RUNNING, Change(agent="box"))
    assert sorted(cancel_queue(store, "gpu")) == sorted(r.id for r in gpu[1:])
    assert store.get(gpu[0].id).status is TaskStatus.RUNNING
    assert store.get(cpu.id).status is TaskStatus.QUEUED
    with pytest.raises(UnknownQueue, match=r"no queue named 'gpus' \(known queues: cpu, gpu\)"):
        cancel_queue(store, "gpus")
