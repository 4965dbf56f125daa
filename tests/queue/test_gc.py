from __future__ import annotations

import dataclasses
import hashlib
import time

import redis

from overnight.metrics.summary import MetricSummary
from overnight.outputs import manifest
from overnight.outputs.manifest import OutputEntry
from overnight.outputs.redisstore import RedisOutputStore, blob_key
from overnight.queue import keys
from overnight.queue.gc import GcReport, collect, collect_outputs
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit, submit_many, submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.spec import BlobRef, Snapshot
from tests.fixtures.tasks import make_snapshot

DAY = 86400.0


def _end(store: TaskStore, task_id: str) -> None:
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box"))
    metrics = {"loss": MetricSummary.first(0.5)}
    store.update_metrics(
        task_id, metrics, {"loss": [[0.0, None, 0.5]]}, expect={TaskStatus.RUNNING}, agent="box"
    )
    report = {"summary": {}, "series": {"cpu_pct": [[0.0, 50.0]]}}
    store.transition(task_id, TaskStatus.FINISHED, Change(exit_code=0, extra={"resources": report}))


def test_gc_removes_old_tasks_and_what_only_they_use(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    shared = make_snapshot(patch=b"shared patch", bundle=b"shared bundle")
    old_a, old_b = submit_many(
        store,
        [
            Submission(shared, TaskOptions(queue="gpu"), argv=("python", "t.py", "--x", x))
            for x in "ab"
        ],
    )
    lone = submit(store, make_snapshot(patch=b"lone patch"), TaskOptions(queue="gpu"))
    running = submit(store, make_snapshot(), TaskOptions(queue="gpu"))
    for record in (old_a, old_b, lone):
        _end(store, record.id)
        store.logs.append(record.id, [(1.0, "output")])
    store.transition(running.id, TaskStatus.RUNNING, Change(agent="box"))
    later = time.time() + 31 * DAY

    dry = collect(store, older_than=30 * DAY, now=later, dry_run=True)
    assert sorted(dry.tasks) == sorted([old_a.id, old_b.id, lone.id])
    assert redis_client.exists(keys.task(lone.id))

    fresh = submit(store, shared, TaskOptions(queue="gpu"))  # still uses the shared spec and blobs
    report = collect(store, older_than=30 * DAY, now=later - DAY / 2)
    assert sorted(report.tasks) == sorted([old_a.id, old_b.id, lone.id])
    for record in (old_a, old_b, lone):
        assert not redis_client.exists(
            keys.task(record.id),
            keys.log(record.id),
            keys.series(record.id),
            keys.metric_series(record.id),
        )
        assert not redis_client.exists(f"rq:job:{record.id}")
        assert record.id.encode() not in redis_client.zrange(keys.BY_CREATED, 0, -1)
    assert not redis_client.exists(
        keys.spec(lone.spec_id), keys.blob(hashlib.sha256(b"lone patch").hexdigest())
    )
    assert store.load_snapshot(fresh.id).blobs == shared.blobs
    assert store.get(running.id).status is TaskStatus.RUNNING
    assert redis_client.zcard("rq:finished:gpu") == 0

    _end(store, fresh.id)
    collect(store, older_than=0, now=time.time() + 1)
    for sha in shared.blobs:
        assert not redis_client.exists(keys.blob(sha))
    running_spec = store.recorded_snapshot(running.id).spec
    assert running_spec.patch is not None
    assert set(redis_client.hkeys(keys.REFS)) == {
        f"s:{running.spec_id}".encode(),
        f"b:{running_spec.patch.sha256}".encode(),
    }


def test_gc_corrupt(store: TaskStore, redis_client: redis.Redis) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    _end(store, record.id)
    assert redis_client.exists(keys.series(record.id), keys.metric_series(record.id)) == 2
    redis_client.set(keys.task(record.id), b"garbage")
    report = collect(store, older_than=30 * DAY, corrupt=True)
    assert report.corrupt == [record.id] and report.tasks == []
    assert not redis_client.exists(
        keys.task(record.id), keys.series(record.id), keys.metric_series(record.id)
    )


def test_submodule_patches_are_stored_loaded_and_collected_like_the_patch(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    snap = make_snapshot(patch=b"top patch")
    sub = {"vendor/lib": b"lib patch", "vendor/lib/deps/inner": b"inner patch"}
    refs = {path: BlobRef.of(data) for path, data in sub.items()}
    repo = dataclasses.replace(snap.spec.repo, submodule_trees=dict.fromkeys(sub, "f" * 40))
    spec = dataclasses.replace(snap.spec, repo=repo, submodule_patches=refs, version=2)
    with_subs = Snapshot(spec, {**snap.blobs, **{r.sha256: sub[p] for p, r in refs.items()}})
    record = submit(store, with_subs, TaskOptions(queue="gpu"))
    loaded = store.load_snapshot(record.id)
    assert loaded.spec == spec and loaded.blobs == with_subs.blobs
    _end(store, record.id)
    collect(store, older_than=0, now=time.time() + 1)
    for data in (b"top patch", *sub.values()):
        assert not redis_client.exists(keys.blob(hashlib.sha256(data).hexdigest()))


def _output(store: TaskStore, task_id: str, path: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    blobs = RedisOutputStore(store.redis)
    if not blobs.exists(digest):
        blobs.write(digest, [data])
    entry = OutputEntry(path, digest, len(data), 1.0, 2.0, 0)
    manifest.record(store.redis, task_id, entry)
    return digest


def test_gc_removes_a_tasks_outputs_and_the_blobs_no_other_task_uses(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    old, kept = (submit(store, make_snapshot(), TaskOptions(queue="gpu")) for _ in range(2))
    _end(store, old.id)
    shared = _output(store, old.id, "outputs/model.bin", b"the same checkpoint")
    _output(store, kept.id, "outputs/model.bin", b"the same checkpoint")
    lone = _output(store, old.id, "outputs/result.csv", b"only the old task's")
    manifest.note(redis_client, old.id, "big.bin", "over the cap", 0)
    report = collect(store, older_than=30 * DAY, now=time.time() + 31 * DAY)
    assert report.tasks == [old.id]
    assert report.output_blobs == 1
    assert not redis_client.exists(blob_key(lone), manifest.entries_key(old.id))
    assert not redis_client.exists(manifest.notes_key(old.id))
    assert redis_client.exists(blob_key(shared))  # the kept task still uses it
    assert manifest.read(redis_client, kept.id).entries[0].digest == shared
    _end(store, kept.id)
    collect(store, older_than=30 * DAY, now=time.time() + 31 * DAY)
    assert not redis_client.exists(blob_key(shared), manifest.users_key(shared))


def test_gc_of_outputs_alone_keeps_the_tasks_and_says_where_their_outputs_went(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    old, recent = (submit(store, make_snapshot(), TaskOptions(queue="gpu")) for _ in range(2))
    _end(store, old.id)
    _end(store, recent.id)
    lone = _output(store, old.id, "outputs/model.bin", b"an old checkpoint")
    fresh = _output(store, recent.id, "outputs/model.bin", b"a recent checkpoint")
    now = time.time() + 10 * DAY
    redis_client.zadd(keys.BY_CREATED, {recent.id: now})  # created later than the cutoff
    dry = collect_outputs(store, GcReport(), older_than=7 * DAY, now=now, dry_run=True)
    assert dry.outputs_of == [old.id] and redis_client.exists(blob_key(lone))
    report = collect_outputs(store, GcReport(), older_than=7 * DAY, now=now)
    assert (report.outputs_of, report.output_blobs) == ([old.id], 1)
    assert store.get(old.id).status is TaskStatus.FINISHED  # the record stays
    found = manifest.read(redis_client, old.id)
    assert found.entries == () and found.notes[0].reason == "removed by gc --outputs-older-than"
    assert not redis_client.exists(blob_key(lone))
    assert redis_client.exists(blob_key(fresh))


def test_gc_forgets_a_sweep_once_its_last_task_is_removed(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    snapshot = make_snapshot(("python", "train.py", "--lr", "1"))
    first, second = submit_sweep(store, snapshot, TaskOptions(), [Sweep("lr", ("0.1", "0.2"))])
    sweep = first.sweep
    assert sweep is not None
    _end(store, first.id)
    collect(store, older_than=0, now=time.time() + 1)
    assert redis_client.zrange(keys.by_sweep(sweep), 0, -1) == [second.id.encode()]
    assert redis_client.zscore(keys.SWEEPS, sweep) == 0
    _end(store, second.id)
    collect(store, older_than=0, now=time.time() + 1)
    assert not redis_client.exists(keys.by_sweep(sweep))
    assert redis_client.zscore(keys.SWEEPS, sweep) is None
