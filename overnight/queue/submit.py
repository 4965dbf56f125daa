"""Enqueueing: one task, or many (a sweep), stored in one transaction, their spec and blobs once.

A submission is one Redis round trip: the blobs, the spec, the records, their indexes and RQ jobs
go in one MULTI/EXEC. Two cases add one: a task with ``--after`` first reads (and watches) the
tasks it waits for, and a blob over :data:`INLINE_BLOB_BYTES` is first checked for in Redis, so
that the bytes of a large bundle already stored are never sent again. Behind Sentinel, one more
waits for the replicas to have it (:mod:`overnight.queue.replication`).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from redis.client import Pipeline
from redis.exceptions import WatchError

from overnight.config import ClientConfig
from overnight.errors import UsageError
from overnight.notify.targets import parse_target
from overnight.outputs import manifest
from overnight.queue import keys
from overnight.queue.blobs import BlobStore, spec_id_of
from overnight.queue.dependencies import finished_dependencies
from overnight.queue.durations import parse_duration
from overnight.queue.failures import DEFAULT_RETRY_ON, check_retries, parse_retry_on
from overnight.queue.index import TaskIndex
from overnight.queue.records import StatusChange, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.sweeps import Sweep, expand
from overnight.recorder.params import Param, parse_params
from overnight.spec import Snapshot

INLINE_BLOB_BYTES = 256 * 1024
"""Blobs up to this size are sent with the submission; larger ones only when Redis lacks them."""

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


@dataclasses.dataclass(frozen=True)
class Submission:
    """One task to enqueue: a snapshot, how to run it, and this task's own argv (sweeps, clones)."""

    snapshot: Snapshot
    options: TaskOptions
    argv: tuple[str, ...] | None = None  # None: the recorded argv
    name: str | None = None  # None: the recorded name
    retry_of: str | None = None
    clone_of: str | None = None
    note: str | None = None  # None: the recorded note
    tags: tuple[str, ...] | None = None  # None: the recorded tags
    sweep: str | None = None  # the sweep it belongs to (a retry keeps its first task's)
    outputs_of: str | None = None  # a task whose stored outputs it starts with (retry --resume)


def check_queue_name(queue: str) -> None:
    """Raise :class:`UsageError` when ``queue`` cannot name a queue."""
    if not _QUEUE_NAME.match(queue):
        raise UsageError(f"invalid queue name {queue!r}: use letters, digits, '.', '_' and '-'")


def check_options(options: TaskOptions) -> None:
    """Raise :class:`UsageError` naming the first invalid option."""
    check_queue_name(options.queue)
    if options.gpus < 0:
        raise UsageError(f"--gpus must be 0 or more, not {options.gpus}")
    check_retries(options.retries)
    for target in options.notify:
        parse_target(target)
    if options.timeout is not None and options.timeout <= 0:
        raise UsageError("--timeout must be a positive duration such as 8h or 90m")
    if options.expect is not None and options.expect <= 0:
        raise UsageError("--expect must be a positive duration such as 3h or 45m")


def task_options(
    store: TaskStore,
    config: ClientConfig,
    *,
    queue: str | None = None,
    gpus: int | None = None,
    image: str | None = None,
    timeout: float | str | None = None,
    retries: int = 0,
    after: Sequence[str] = (),
    grace: float | str | None = None,
    expect: float | str | None = None,
    retry_on: str | Sequence[str] | None = None,
    notify: Sequence[str] = (),
    notify_metric: str | None = None,
) -> TaskOptions:
    """How to run a task, as ``overnight enqueue`` and the Python API take it: durations in
    seconds or as text ("8h"), ``after`` prefixes resolved, ``gpus`` (None: not given) defaulted
    by queue, ``retry_on`` kinds checked, ``notify`` added to the config's targets."""
    queue = queue or config.default_queue
    check_retries(retries)
    return TaskOptions(
        queue=queue,
        gpus=config.gpus_for(queue) if gpus is None else gpus,
        image=image,
        timeout=_seconds(timeout, "--timeout"),
        retries=retries,
        after=tuple(store.resolve(a) for a in after),
        grace=_seconds(grace, "--grace"),
        expect=_seconds(expect, "--expect"),
        retry_on=parse_retry_on(retry_on) if retry_on is not None else DEFAULT_RETRY_ON,
        notify=tuple(dict.fromkeys([*config.notify, *notify])),
        notify_metric=notify_metric or config.notify_metric,
    )


def _seconds(value: float | str | None, what: str) -> float | None:
    return parse_duration(value, what=what) if isinstance(value, str) else value


def submit(
    store: TaskStore, snapshot: Snapshot, options: TaskOptions, *, retry_of: str | None = None
) -> TaskRecord:
    """Store a task and push its RQ job; status ``queued``, or ``waiting`` with ``after``."""
    return submit_many(store, [Submission(snapshot, options, retry_of=retry_of)])[0]


def submit_sweep(
    store: TaskStore,
    snapshot: Snapshot,
    options: TaskOptions,
    sweeps: Sequence[Sweep] = (),
    *,
    name: str | None = None,
    declared: Iterable[Param] = (),
    add_params: bool = False,
    at_front: bool = False,
) -> list[TaskRecord]:
    """One task, or one per combination of the sweeps' values, all sharing ``snapshot`` and a new
    sweep id (``record.sweep``); ``declared`` and ``add_params`` say which names a sweep may set
    (:func:`expand`)."""
    if not sweeps:
        return submit_many(store, [Submission(snapshot, options, name=name)], at_front=at_front)
    variants = expand(snapshot.spec.argv, sweeps, declared=declared, add=add_params)
    sweep = keys.new_sweep_id()
    return submit_many(
        store,
        [Submission(snapshot, options, argv=argv, name=name, sweep=sweep) for argv, _ in variants],
        at_front=at_front,
    )


def submit_many(
    store: TaskStore, submissions: Sequence[Submission], *, at_front: bool = False
) -> list[TaskRecord]:
    """Store the tasks, their indexes and RQ jobs in one transaction; returns their records.

    ``at_front`` puts them ahead of every task already queued, in their order."""
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
                tags=sub.tags if sub.tags is not None else spec.tags,
                retry_of=sub.retry_of,
                clone_of=sub.clone_of,
                sweep=sub.sweep,
                note=sub.note if sub.note is not None else spec.note,
            )
        )
    inline = {sha: data for sha, data in blobs.items() if len(data) <= INLINE_BLOB_BYTES}
    store.blobs.put_blobs({sha: data for sha, data in blobs.items() if sha not in inline})
    after = sorted({a for sub in submissions for a in sub.options.after})
    sources = sorted({sub.outputs_of for sub in submissions if sub.outputs_of})
    with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                finished = finished_dependencies(pipe, after)
                inherited = {s: manifest.watched_entries(pipe, s) for s in sources}
                pipe.multi()
                store.blobs.queue_blobs(pipe, inline)
                for spec_id, (spec_json, shas) in specs.items():
                    store.blobs.add_spec(spec_id, spec_json, shas, uses[spec_id], pipe=pipe)
                pairs = list(zip(records, submissions, strict=True))
                for record, sub in reversed(pairs) if at_front else pairs:  # front: in order
                    outputs = inherited.get(sub.outputs_of or "", {})
                    _queue_record(store, pipe, record, finished, len(outputs), at_front=at_front)
                    manifest.queue_inherit(pipe, record.id, outputs)
                results: list[Any] = pipe.execute()
                break
            except WatchError:
                continue
    added = results[len(inline) : len(inline) + len(specs)]
    for spec_id, result in zip(specs, added, strict=True):
        missing = BlobStore.missing_from(result)
        while missing:  # a concurrent gc removed a blob after we wrote it: write it again
            store.blobs.put_blobs({s: blobs[s] for s in missing}, skip_existing=False)
            spec_json, shas = specs[spec_id]
            missing = store.blobs.add_spec(spec_id, spec_json, shas, uses[spec_id])
    store.acks.confirm(store.redis, f"the submission of {len(records)} task(s)")
    return records


def _queue_record(
    store: TaskStore,
    pipe: Pipeline,
    record: TaskRecord,
    finished: set[str],
    inherited: int,
    *,
    at_front: bool,
) -> None:
    pending = [a for a in record.options.after if a not in finished]
    record.status = TaskStatus.WAITING if pending else TaskStatus.QUEUED
    if pending:
        note = "waiting for " + ", ".join(pending)
    elif record.retry_of:
        note = f"retry of {record.retry_of}"
        if inherited:
            note += f", resuming from its {inherited} stored output file(s)"
    elif record.clone_of:
        note = f"clone of {record.clone_of}"
    else:
        note = ""
    record.history = [StatusChange(record.status, record.created, note)]
    pipe.set(keys.task(record.id), record.to_json())
    TaskIndex.add(pipe, record)
    pipe.sadd(keys.QUEUES, record.options.queue)
    job = store.rq.new_job(record.id, record.options.queue, after=pending)
    store.rq.push_new(pipe, job, at_front=at_front)
    for dependency in pending:
        pipe.sadd(keys.dependents(dependency), record.id)
