from __future__ import annotations

import pytest
import redis

from overnight.errors import (
    AmbiguousTaskId,
    CorruptRecord,
    InvalidTransition,
    SweepNotFound,
    TaskNotFound,
    UsageError,
)
from overnight.metrics.summary import MetricSummary
from overnight.queue import keys
from overnight.queue.records import Change, Phase, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit, submit_many, submit_sweep
from overnight.queue.sweeps import Sweep
from tests.fixtures.tasks import make_snapshot


def test_submit_stores_record_spec_blobs_and_queues(store: TaskStore) -> None:
    snap = make_snapshot(name="baseline", tags=("a", "b"), bundle=b"BUNDLE")
    record = submit(store, snap, TaskOptions(queue="gpu", gpus=2, retries=1))
    assert record.status is TaskStatus.QUEUED
    got = store.get(record.id)
    assert got == record
    assert got.argv == snap.spec.argv and got.params == {"lr": "0.1"}
    assert got.name == "baseline" and got.tags == ("a", "b")
    assert [h.status for h in got.history] == [TaskStatus.QUEUED]
    loaded = store.load_snapshot(record.id)
    assert loaded.spec == snap.spec
    assert loaded.blobs == snap.blobs
    assert store.known_queues() == ["gpu"]


def test_get_unknown_and_corrupt(store: TaskStore, redis_client: redis.Redis) -> None:
    with pytest.raises(TaskNotFound, match="overnight ls"):
        store.get("abcdef123456")
    redis_client.set(keys.task("abcdef123456"), b'{"id": "abcdef1')
    with pytest.raises(CorruptRecord, match="abcdef123456"):
        store.get("abcdef123456")


def test_a_key_of_another_type_or_a_misnamed_record_is_corrupt(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    hashed, misnamed = (submit(store, make_snapshot(), TaskOptions()).id for _ in range(2))
    redis_client.delete(keys.task(hashed))
    redis_client.hset(keys.task(hashed), "status", "queued")
    other = store.get(misnamed).to_json().replace(misnamed, "0123456789ab")
    redis_client.set(keys.task(misnamed), other)
    for task_id, reason in ((hashed, "is not a string"), (misnamed, "names task '0123456789ab'")):
        with pytest.raises(CorruptRecord, match=reason):
            store.get(task_id)
        with pytest.raises(CorruptRecord, match=reason):
            store.transition(task_id, TaskStatus.CANCELED)
    records = store.get_many([hashed, misnamed])
    assert [(r.id, r.status) for r in records] == [
        (hashed, TaskStatus.CORRUPT),
        (misnamed, TaskStatus.CORRUPT),
    ]


def test_get_many_shows_corrupt_records_and_skips_missing(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    good = submit(store, make_snapshot(), TaskOptions())
    redis_client.set(keys.task("bad000000000"), b"not json")
    records = store.get_many([good.id, "bad000000000", "missing00000"])
    assert [r.id for r in records] == [good.id, "bad000000000"]
    assert records[1].status is TaskStatus.CORRUPT
    assert "cannot be decoded" in (records[1].error or "")


def test_resolve_prefixes_like_git(store: TaskStore, redis_client: redis.Redis) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    assert store.resolve(record.id) == record.id
    assert store.resolve(record.id[:3].upper()) == record.id
    # Two ids sharing a prefix (written into the index as submit would).
    redis_client.zadd(keys.BY_ID, {"abc111111111": 0, "abc222222222": 0})
    with pytest.raises(AmbiguousTaskId, match="abc111111111, abc222222222"):
        store.resolve("abc")
    assert store.resolve("abc1") == "abc111111111"
    with pytest.raises(TaskNotFound, match="no task"):
        store.resolve("fffff")
    with pytest.raises(TaskNotFound, match="not a task id"):
        store.resolve("not-an-id")


def test_transition_keeps_history_times_and_fields(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="box1"), note="taken")
    running = store.transition(record.id, TaskStatus.RUNNING, Change(gpu_ids=("0", "1")))
    assert running.started is not None and running.agent == "box1"
    assert running.gpu_ids == ("0", "1")
    done = store.transition(
        record.id,
        TaskStatus.FAILED,
        Change(exit_code=3, phase=Phase.RUN, error="exit code 3", extra={"a": 1}),
    )
    done = store.transition(record.id, TaskStatus.FAILED, Change(extra={"b": 2}))
    assert done.exit_code == 3 and done.phase is Phase.RUN and done.error == "exit code 3"
    assert done.extra == {"a": 1, "b": 2}
    assert done.ended is not None and done.ended >= running.started
    assert [h.status for h in done.history] == [
        TaskStatus.QUEUED,
        TaskStatus.PREPARING,
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
    ]
    assert done.history[1].note == "taken"
    assert store.get(record.id) == done


def test_expected_status_mismatch_writes_nothing(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    with pytest.raises(InvalidTransition, match="is queued, not running"):
        store.transition(
            record.id, TaskStatus.FINISHED, Change(exit_code=0), expect={TaskStatus.RUNNING}
        )
    assert store.get(record.id) == record
    assert store.index.ids([TaskStatus.QUEUED]) == [record.id]
    assert store.index.ids([TaskStatus.FINISHED]) == []


def test_a_change_is_typed_and_checked(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    with pytest.raises(TypeError, match="bogus"):
        store.transition(record.id, TaskStatus.RUNNING, bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bogus"):
        Change(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="expected an integer"):
        Change(exit_code="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempt must be 0 or more"):
        Change(attempt=-1)
    with pytest.raises(ValueError, match="'walking'"):
        Change(phase="walking")  # type: ignore[arg-type]
    assert store.get(record.id).status is TaskStatus.QUEUED  # nothing was written
    change = Change(gpu_ids=["0", "1"], phase="run", extra={"a": 1})  # type: ignore[arg-type]
    assert (change.gpu_ids, change.phase) == (("0", "1"), Phase.RUN)
    running = store.transition(record.id, TaskStatus.RUNNING, change)
    assert (running.gpu_ids, running.phase, running.extra) == (("0", "1"), Phase.RUN, {"a": 1})


def test_requeue_starts_a_fresh_attempt(store: TaskStore, redis_client: redis.Redis) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    redis_client.lpop("rq:queue:gpu")  # an agent took the job
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="a"))
    run = {"resources": {"summary": {}}, "hardware": {"host": "h"}, "environment": {}, "run": {}}
    metrics = {"loss": MetricSummary.first(0.5, step=3)}
    running = store.transition(
        record.id, TaskStatus.RUNNING, Change(extra={**run, "kept": 1}, metrics=metrics)
    )
    assert store.get(record.id).metrics == running.metrics == metrics
    again = store.requeue(record.id, at_front=True, note="agent stopping")
    assert again.status is TaskStatus.QUEUED
    assert again.agent is None and again.started is None and again.attempt == 0
    assert again.extra == {"kept": 1}  # the last attempt's report would mislead the next one
    assert again.metrics == {}
    assert again.history[-1].note == "agent stopping"
    other = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    store.requeue(other.id)  # already queued: still one entry
    assert redis_client.lrange("rq:queue:gpu", 0, -1) == [record.id.encode(), other.id.encode()]


def test_update_extra_writes_only_to_the_agents_task_in_the_expected_status(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    running = {TaskStatus.RUNNING}
    assert not store.update_extra(record.id, {"resources": 1}, expect=running, agent="a")
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="a"))
    store.transition(record.id, TaskStatus.RUNNING, Change(extra={"hardware": {"host": "h"}}))
    assert not store.update_extra(record.id, {"resources": 1}, expect=running, agent="b")
    assert store.update_extra(record.id, {"resources": {"summary": {}}}, expect=running, agent="a")
    got = store.get(record.id)
    assert got.extra == {"hardware": {"host": "h"}, "resources": {"summary": {}}}
    assert got.status is TaskStatus.RUNNING and got.history == store.get(record.id).history
    final = {"summary": {"cpu_pct": {"peak": 9.0, "mean": 1.0}}}
    store.transition(
        record.id, TaskStatus.FINISHED, Change(exit_code=0, extra={"resources": final})
    )
    assert not store.update_extra(record.id, {"resources": {}}, expect=running, agent="a")
    assert store.get(record.id).extra["resources"] == final  # the final report stays
    assert not store.update_extra("0123456789ab", {"x": 1}, expect=running, agent="a")
    redis_client.set(keys.task("abcdefabcdef"), b"{")
    assert not store.update_extra("abcdefabcdef", {"x": 1}, expect=running, agent="a")


def test_a_resource_series_is_kept_apart_from_the_record(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="a"))
    report = {"summary": {"cpu_pct": {"peak": 9.0, "mean": 4.0}}, "series": {"cpu_pct": [[0, 9]]}}
    store.transition(record.id, TaskStatus.RUNNING, Change(extra={"resources": report}))
    assert store.get(record.id).extra["resources"] == {"summary": report["summary"]}
    assert store.series(record.id) == {"cpu_pct": [[0, 9]]}
    later = {**report, "series": {"cpu_pct": [[0, 9], [5, 1]]}}
    assert store.update_extra(
        record.id, {"resources": later}, expect={TaskStatus.RUNNING}, agent="a"
    )
    assert "series" not in store.get(record.id).extra["resources"]
    assert store.series(record.id) == {"cpu_pct": [[0, 9], [5, 1]]}
    store.requeue(record.id)  # a new attempt starts without the last one's series
    assert store.series(record.id) == {} and not redis_client.exists(keys.series(record.id))
    redis_client.set(keys.series(record.id), b"not json")
    assert store.series(record.id) == {}


def test_metrics_are_written_only_to_the_agents_task_with_their_series_apart(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    record = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    running = {TaskStatus.RUNNING}
    metrics = {"loss": MetricSummary(0.5, 0.5, 2.0, 2, 1.0, 1.0, 0.0)}
    series = {"loss": [[0.0, 0.0, 2.0], [1.5, 1.0, 0.5]]}
    assert not store.update_metrics(record.id, metrics, series, expect=running, agent="a")
    store.transition(record.id, TaskStatus.PREPARING, Change(agent="a"))
    store.transition(record.id, TaskStatus.RUNNING)
    assert not store.update_metrics(record.id, metrics, series, expect=running, agent="b")
    assert store.metric_series(record.id) == {}
    assert store.update_metrics(record.id, metrics, series, expect=running, agent="a")
    got = store.get(record.id)
    assert got.metrics == metrics and "series" not in got.to_json()
    assert store.metric_series(record.id) == series
    with pytest.raises(TypeError):
        store.update_metrics(record.id, {"loss": 1.0}, {}, expect=running, agent="a")  # type: ignore[dict-item]
    store.transition(record.id, TaskStatus.FINISHED, Change(exit_code=0))
    assert not store.update_metrics(record.id, {}, {}, expect=running, agent="a")
    assert store.get(record.id).metrics == metrics  # the final summaries stay
    store.requeue(record.id)  # a new attempt starts without the last one's metrics
    assert store.get(record.id).metrics == {}
    assert store.metric_series(record.id) == {}
    assert not redis_client.exists(keys.metric_series(record.id))
    for junk in (b"not json", b"[1]", b'{"loss": 3, "acc": [[0, null, 1]]}'):
        redis_client.set(keys.metric_series(record.id), junk)
        assert store.metric_series(record.id) == ({"acc": [[0, None, 1]]} if b"acc" in junk else {})


def test_notes(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    store.add_note(record.id, "python 3.11 not found; used 3.12")
    assert store.get(record.id).notes == ["python 3.11 not found; used 3.12"]


def test_sweep_shares_spec_and_blobs(store: TaskStore, redis_client: redis.Redis) -> None:
    snap = make_snapshot(patch=b"P" * 10_000, bundle=b"B" * 10_000)
    subs = [
        Submission(snap, TaskOptions(), argv=("python", "train.py", "--lr", lr))
        for lr in ("0.1", "0.01", "0.001")
    ]
    records = submit_many(store, subs)
    assert len({r.spec_id for r in records}) == 1
    assert [r.params["lr"] for r in records] == ["0.1", "0.01", "0.001"]
    assert len(redis_client.keys(keys.blob("*"))) == 2
    assert store.blobs.refs(records[0].spec_id) == 3
    assert store.load_snapshot(records[1].id).spec.argv[-1] == "0.01"
    assert store.recorded_snapshot(records[1].id).spec.argv[-1] == "0.1"


def test_invalid_options(store: TaskStore) -> None:
    with pytest.raises(UsageError, match="queue name"):
        submit(store, make_snapshot(), TaskOptions(queue="my queue"))
    with pytest.raises(UsageError, match="--gpus"):
        submit(store, make_snapshot(), TaskOptions(gpus=-1))


def test_missing_blob_is_a_clear_error(store: TaskStore, redis_client: redis.Redis) -> None:
    snap = make_snapshot()
    record = submit(store, snap, TaskOptions())
    redis_client.delete(keys.blob(snap.spec.patch.sha256 if snap.spec.patch else ""))
    with pytest.raises(CorruptRecord, match="missing from Redis"):
        store.load_snapshot(record.id)


def test_resolve_sweep_takes_a_sweep_id_or_one_of_its_tasks(store: TaskStore) -> None:
    snapshot = make_snapshot(("python", "train.py", "--lr", "1"))
    first, second = submit_sweep(store, snapshot, TaskOptions(), [Sweep("lr", ("0.1", "0.2"))])
    lone = submit(store, snapshot, TaskOptions())
    assert first.sweep is not None
    assert store.resolve_sweep(first.sweep) == first.sweep
    assert store.resolve_sweep(second.id[:8]) == first.sweep  # a task's id: its sweep
    with pytest.raises(SweepNotFound, match=f"task {lone.id} is in no sweep"):
        store.resolve_sweep(lone.id)
    with pytest.raises(SweepNotFound, match=r"no sweep or task has an id starting with f{12}"):
        store.resolve_sweep("f" * 12)
