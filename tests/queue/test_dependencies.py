from __future__ import annotations

import pytest
import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer

from overnight.errors import TaskNotFound, UsageError
from overnight.queue.cancel import request_cancel
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.tasks import make_snapshot


def _finish(store: TaskStore, task_id: str, status: TaskStatus = TaskStatus.FINISHED) -> None:
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box"))
    store.transition(task_id, status, Change(exit_code=0 if status is TaskStatus.FINISHED else 1))


def _queue(redis_client: redis.Redis, name: str = "default") -> Queue:
    return Queue(name, connection=redis_client, serializer=JSONSerializer)


def test_waiting_task_is_queued_when_its_dependency_finishes(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    first = submit(store, make_snapshot(), TaskOptions())
    redis_client.lpop(_queue(redis_client).key)  # an agent took it
    second = submit(store, make_snapshot(), TaskOptions(after=(first.id,)))
    assert second.status is TaskStatus.WAITING
    job = Job.fetch(second.id, connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.DEFERRED
    assert _queue(redis_client).deferred_job_registry.get_job_ids() == [second.id]
    assert _queue(redis_client).job_ids == []

    _finish(store, first.id)
    released = store.get(second.id)
    assert released.status is TaskStatus.QUEUED
    assert released.history[-1].note == f"dependency {first.id} finished"
    assert _queue(redis_client).job_ids == [second.id]
    assert job.get_status(refresh=True) is JobStatus.QUEUED
    assert _queue(redis_client).deferred_job_registry.get_job_ids() == []


def test_rq_releasing_too_never_queues_twice(store: TaskStore, redis_client: redis.Redis) -> None:
    """RQ's own success path (enqueue_dependents) and overnight's release both push: once only."""
    first = submit(store, make_snapshot(), TaskOptions())
    second = submit(store, make_snapshot(), TaskOptions(after=(first.id,)))
    queue = _queue(redis_client)
    redis_client.lpop(queue.key)
    first_job = Job.fetch(first.id, connection=redis_client, serializer=JSONSerializer)
    first_job.set_status(JobStatus.FINISHED)
    queue.enqueue_dependents(first_job)  # what RQ's worker does after a job succeeds
    assert queue.job_ids == [second.id]
    _finish(store, first.id)
    assert queue.job_ids == [second.id]
    assert store.get(second.id).status is TaskStatus.QUEUED


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.LOST])
def test_dependents_of_a_task_that_did_not_finish_are_canceled(
    store: TaskStore, redis_client: redis.Redis, status: TaskStatus
) -> None:
    first = submit(store, make_snapshot(), TaskOptions())
    second = submit(store, make_snapshot(), TaskOptions(after=(first.id,)))
    third = submit(store, make_snapshot(), TaskOptions(after=(second.id,)))
    if status is TaskStatus.CANCELED:
        request_cancel(store, first.id)
    else:
        _finish(store, first.id, status)
    canceled = store.get(second.id)
    assert canceled.status is TaskStatus.CANCELED
    assert canceled.history[-1].note == f"dependency {first.id} {status.value}"
    assert store.get(third.id).status is TaskStatus.CANCELED  # the chain follows
    assert _queue(redis_client).job_ids == []


def test_task_after_several_waits_for_all(store: TaskStore) -> None:
    a = submit(store, make_snapshot(), TaskOptions())
    b = submit(store, make_snapshot(), TaskOptions())
    c = submit(store, make_snapshot(), TaskOptions(after=(a.id, b.id)))
    _finish(store, a.id)
    assert store.get(c.id).status is TaskStatus.WAITING
    _finish(store, b.id)
    assert store.get(c.id).status is TaskStatus.QUEUED


def test_after_a_finished_task_is_queued_at_once(store: TaskStore) -> None:
    a = submit(store, make_snapshot(), TaskOptions())
    _finish(store, a.id)
    assert submit(store, make_snapshot(), TaskOptions(after=(a.id,))).status is TaskStatus.QUEUED


def test_after_an_unknown_or_failed_task_is_refused(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound, match="--after 0123456789ab"):
        submit(store, make_snapshot(), TaskOptions(after=("0123456789ab",)))
    a = submit(store, make_snapshot(), TaskOptions())
    _finish(store, a.id, TaskStatus.FAILED)
    with pytest.raises(UsageError, match="already ended failed"):
        submit(store, make_snapshot(), TaskOptions(after=(a.id,)))
