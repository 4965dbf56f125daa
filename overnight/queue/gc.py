"""Garbage collection: ended tasks older than the retention go, with everything only they used.

A task's record, indexes, log, RQ job, heartbeat and flags are deleted; its spec and blobs are
released and deleted once no remaining task uses them (reference counts, see
:mod:`overnight.queue.blobs`), and so are its output manifest and the output blobs no other task
uses (:mod:`overnight.outputs.manifest`). Tasks that have not ended are never collected. The
studies whose tasks are all gone follow (:mod:`overnight.optimize.gc`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from typing import TYPE_CHECKING

from overnight.outputs import manifest
from overnight.outputs.redisstore import RedisOutputStore
from overnight.outputs.store import OutputStore
from overnight.queue import keys, replies
from overnight.queue.records import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from overnight.queue.store import TaskStore

_CHUNK = 500


@dataclasses.dataclass
class GcReport:
    tasks: list[str] = dataclasses.field(default_factory=list)  # ids removed (or to be, dry run)
    specs_and_blobs: int = 0  # spec and blob keys deleted
    output_blobs: int = 0  # output files' blobs deleted (no task uses them now)
    outputs_of: list[str] = dataclasses.field(default_factory=list)  # kept tasks, outputs gone
    corrupt: list[str] = dataclasses.field(default_factory=list)  # corrupt records removed
    studies: list[str] = dataclasses.field(default_factory=list)  # studies with no task left
    journal_kept: list[str] = dataclasses.field(default_factory=list)  # in Optuna's journal still


def collect(
    store: TaskStore,
    *,
    older_than: float,
    corrupt: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    outputs: OutputStore | None = None,
) -> GcReport:
    """Remove ended tasks that ended (or were created, if never started) ``older_than`` s ago.

    With ``corrupt``, records that cannot be decoded are removed too, whatever their age.
    Their outputs go from ``outputs`` (default: the Redis output store).
    """
    outputs = outputs or RedisOutputStore(store.redis)
    cutoff = (time.time() if now is None else now) - older_than
    report = GcReport()
    candidates = (
        [replies.text(m) for m in store.redis.zrange(keys.BY_CREATED, 0, -1)]
        if corrupt
        else store.index.ids_older_than(cutoff)
    )
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start : start + _CHUNK]
        doomed: list[TaskRecord] = []
        for record in store.get_many(chunk):
            if record.status is TaskStatus.CORRUPT:
                if corrupt:
                    report.corrupt.append(record.id)
                    if not dry_run:
                        _delete_corrupt(store, record.id)
                        report.output_blobs += _delete_outputs(store, outputs, [record.id])
                continue
            if record.status.is_final and (record.ended or record.created) < cutoff:
                doomed.append(record)
        report.tasks.extend(r.id for r in doomed)
        if not dry_run and doomed:
            report.specs_and_blobs += _delete(store, doomed)
            report.output_blobs += _delete_outputs(store, outputs, [r.id for r in doomed])
    return report


def collect_outputs(
    store: TaskStore,
    report: GcReport,
    *,
    older_than: float,
    dry_run: bool = False,
    now: float | None = None,
    outputs: OutputStore | None = None,
) -> GcReport:
    """Remove the outputs of ended tasks older than ``older_than`` s, keeping their records; a
    note on each says where they went."""
    outputs = outputs or RedisOutputStore(store.redis)
    cutoff = (time.time() if now is None else now) - older_than
    candidates = store.index.ids_older_than(cutoff)
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start : start + _CHUNK]
        ended = [
            r.id
            for r in store.get_many(chunk)
            if r.status.is_final and (r.ended or r.created) < cutoff
            and store.redis.exists(manifest.entries_key(r.id))
        ]  # fmt: skip
        report.outputs_of.extend(ended)
        if dry_run or not ended:
            continue
        report.output_blobs += _delete_outputs(store, outputs, ended)
        for task_id in ended:
            manifest.note(store.redis, task_id, "*", "removed by gc --outputs-older-than", 0)
    return report


def _delete_outputs(store: TaskStore, outputs: OutputStore, task_ids: list[str]) -> int:
    unused = manifest.remove(store.redis, task_ids)
    for digest in unused:
        outputs.delete(digest)
    return len(unused)


def _delete(store: TaskStore, records: list[TaskRecord]) -> int:
    pipe = store.redis.pipeline(transaction=True)
    for record in records:
        pipe.delete(
            keys.task(record.id),
            keys.heartbeat(record.id),
            keys.cancel(record.id),
            keys.dependents(record.id),
            keys.log(record.id),
            keys.log_meta(record.id),
            keys.series(record.id),
            keys.metric_series(record.id),
        )
        store.index.remove(pipe, record)
        store.rq.delete(pipe, record.id, record.options.queue)
    pipe.execute()
    store.index.prune_sweeps({r.sweep for r in records if r.sweep is not None})
    deleted = 0
    uses = collections.Counter(r.spec_id for r in records)
    for spec_id, count in uses.items():
        raw = replies.raw(store.redis.get(keys.spec(spec_id)))
        deleted += store.blobs.release_spec(spec_id, _blob_shas(raw), count)
    return deleted


def _blob_shas(raw: bytes | None) -> list[str]:
    """Blob shas a stored spec references, read leniently (any spec version, or none)."""
    if raw is None:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    refs = [data.get("patch"), data.get("bundle")]
    subs = data.get("submodule_patches")
    if isinstance(subs, dict):
        refs.extend(subs[path] for path in sorted(subs))
    shas = [r["sha256"] for r in refs if isinstance(r, dict) and isinstance(r.get("sha256"), str)]
    return list(dict.fromkeys(shas))


def _delete_corrupt(store: TaskStore, task_id: str) -> None:
    pipe = store.redis.pipeline(transaction=True)
    pipe.delete(
        keys.task(task_id),
        keys.heartbeat(task_id),
        keys.cancel(task_id),
        keys.series(task_id),
        keys.metric_series(task_id),
    )
    pipe.zrem(keys.BY_CREATED, task_id)
    pipe.zrem(keys.BY_ID, task_id)
    for status in TaskStatus:
        pipe.zrem(keys.by_status(status.value), task_id)
    for queue in store.known_queues():
        pipe.zrem(keys.by_queue(queue), task_id)
    pipe.execute()
