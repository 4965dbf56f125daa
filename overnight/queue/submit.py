"""Enqueueing: many tasks (a sweep) stored in one transaction, their spec and blobs once each."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import WatchError

from overnight.queue import keys
from overnight.queue.blobs import BlobStore, spec_id_of
from overnight.queue.dependencies import finished_dependencies
from overnight.queue.index import TaskIndex
from overnight.queue.records import StatusChange, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.sweeps import Sweep, expand
from overnight.recorder.params import parse_params
from overnight.spec import Snapshot

if TYPE_CHECKING:
    from overnight.queue.store import Submission, TaskStore


def submit_all(store: TaskStore, submissions: Sequence[Submission]) -> list[TaskRecord]:
    """Store the tasks, their indexes and RQ jobs in one transaction; returns their records."""
    from overnight.queue.store import check_options

    if not submissions:
        return []
    for sub in submissions:
        check_options(sub.options)
    now = time.time()
    specs: dict[str, tuple[str, list[str]]] = {}
    uses: collections.Counter[str] = collections.Counter()
    blobs: dict[str, bytes] = {}
    records: list[TaskRecord] = []
    for position, sub in enumerate(submissions):
        spec = sub.snapshot.spec
        spec_json = spec.to_json()
        spec_id = spec_id_of(spec_json)
        shas = []
        for ref in spec.blob_refs():
            data = sub.snapshot.blob(ref)
            assert data is not None
            blobs[ref.sha256] = data
            shas.append(ref.sha256)
        specs[spec_id] = (spec_json, shas)
        uses[spec_id] += 1
        argv = tuple(sub.argv) if sub.argv is not None else spec.argv
        params = parse_params(argv) if sub.argv is not None else dict(spec.params)
        records.append(
            TaskRecord(
                id=keys.new_task_id(),
                spec_id=spec_id,
                options=sub.options,
                created=now + position * 1e-6,  # keeps a sweep's order in the time indexes
                name=sub.name if sub.name is not None else spec.name,
                argv=argv,
                params=params,
                tags=spec.tags,
                retry_of=sub.retry_of,
            )
        )
    store.blobs.put_blobs(blobs)
    after = sorted({a for sub in submissions for a in sub.options.after})
    with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                finished = finished_dependencies(pipe, after)
                pipe.multi()
                for spec_id, (spec_json, shas) in specs.items():
                    store.blobs.add_spec(spec_id, spec_json, shas, uses[spec_id], pipe=pipe)
                for record in records:
                    _queue_record(store, pipe, record, finished)
                results: list[Any] = pipe.execute()
                break
            except WatchError:
                continue
    for spec_id, result in zip(specs, results[: len(specs)], strict=True):
        missing = BlobStore.missing_from(result)
        while missing:  # a concurrent gc removed a blob after we wrote it: write it again
            store.blobs.put_blobs({s: blobs[s] for s in missing}, skip_existing=False)
            spec_json, shas = specs[spec_id]
            missing = store.blobs.add_spec(spec_id, spec_json, shas, uses[spec_id])
    return records


def _queue_record(store: TaskStore, pipe: Any, record: TaskRecord, finished: set[str]) -> None:
    pending = [a for a in record.options.after if a not in finished]
    record.status = TaskStatus.WAITING if pending else TaskStatus.QUEUED
    if pending:
        note = "waiting for " + ", ".join(pending)
    elif record.retry_of:
        note = f"retry of {record.retry_of}"
    else:
        note = ""
    record.history = [StatusChange(record.status, record.created, note)]
    pipe.set(keys.task(record.id), record.to_json())
    TaskIndex.add(pipe, record)
    pipe.sadd(keys.QUEUES, record.options.queue)
    store.rq.push_new(pipe, store.rq.new_job(record.id, record.options.queue, after=pending))
    for dependency in pending:
        pipe.sadd(keys.dependents(dependency), record.id)


def submit_sweep(
    store: TaskStore,
    snapshot: Snapshot,
    options: TaskOptions,
    sweeps: Sequence[Sweep] = (),
    *,
    name: str | None = None,
) -> list[TaskRecord]:
    """One task, or one per combination of the sweeps' values, all sharing ``snapshot``."""
    from overnight.queue.store import Submission

    if not sweeps:
        return store.submit_many([Submission(snapshot, options, name=name)])
    variants = expand(snapshot.spec.argv, sweeps)
    return store.submit_many(
        [Submission(snapshot, options, argv=argv, name=name) for argv, _ in variants]
    )
