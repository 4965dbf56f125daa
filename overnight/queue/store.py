"""The task store: records, specs, blobs, logs and RQ jobs of tasks, kept consistent in Redis.

Redis holds the truth about every task: its record (status, history, agent, exit code), the spec
it runs (stored once per snapshot, shared by a sweep's tasks, retries and clones) and its blobs.
Every change of a record happens in one transaction with its indexes and its RQ job, so readers
never see them disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from overnight.config import ClientConfig
from overnight.errors import (
    CorruptRecord,
    InvalidTransition,
    SpecError,
    SweepNotFound,
    TaskNotFound,
)
from overnight.metrics.summary import MetricSummary
from overnight.queue import keys, replies
from overnight.queue.blobs import BlobStore
from overnight.queue.connection import acks_for, connect
from overnight.queue.dependencies import released
from overnight.queue.index import Query, TaskIndex
from overnight.queue.logs import DEFAULT_CAP_BYTES, LogStore
from overnight.queue.records import (
    ACTIVE_STATUSES,
    Change,
    StatusChange,
    TaskOptions,
    TaskRecord,
    TaskStatus,
)
from overnight.queue.replication import Acks
from overnight.queue.rqsync import RQMirror
from overnight.spec import Snapshot, TaskSpec

HEARTBEAT_TTL = 30.0
"""Seconds a preparing/running task lives without a heartbeat before it counts as lost."""

#: ``extra`` keys that describe one attempt's run; a task queued again starts without them.
RUN_EXTRA = frozenset({"environment", "hardware", "resources", "run"})


class TaskStore:
    """Tasks in Redis. One instance per process; cheap to create."""

    def __init__(
        self, redis: redis.Redis, *, log_cap_mb: float = 50.0, acks: Acks | None = None
    ) -> None:
        self.redis = redis
        # Which writes wait for replicas: submissions, status changes and log batches.
        self.acks = acks or Acks()
        cap = int(log_cap_mb * 1024 * 1024) if log_cap_mb > 0 else DEFAULT_CAP_BYTES
        self.logs = LogStore(redis, cap_bytes=cap, acks=self.acks)
        self.blobs = BlobStore(redis)
        self.index = TaskIndex(redis)

    @functools.cached_property
    def rq(self) -> RQMirror:
        """The tasks' RQ jobs, kept in step without importing RQ (:mod:`overnight.queue.rqsync`)."""
        return RQMirror(self.redis)

    @classmethod
    def from_config(cls, config: ClientConfig) -> TaskStore:
        """Connect to the configured Redis; nothing is read or written yet."""
        return cls(
            connect(config.redis_url),
            log_cap_mb=config.log_cap_mb,
            acks=acks_for(config.redis_url),
        )

    # -- reading ------------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        raw = _read_record(self.redis, task_id)
        if raw is None:
            raise TaskNotFound(f"no task {task_id}; `overnight ls` lists tasks")
        return _decode(task_id, raw)

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """Records in the given order; corrupt ones as ``corrupt`` placeholders, missing ones left out."""
        if not task_ids:
            return []
        out = []
        values = self.redis.mget([keys.task(t) for t in task_ids])
        absent = [t for t, v in zip(task_ids, values, strict=True) if v is None]
        misfiled = _not_strings(self.redis, absent) if absent else set()
        for task_id, value in zip(task_ids, values, strict=True):
            raw = replies.raw(value)
            if raw is None:
                if task_id in misfiled:
                    out.append(corrupt_placeholder(task_id, _WRONG_TYPE.format(task_id)))
                continue
            try:
                out.append(_decode(task_id, raw))
            except CorruptRecord as exc:
                out.append(corrupt_placeholder(task_id, str(exc)))
        return out

    def resolve(self, id_or_prefix: str) -> str:
        return self.index.resolve(id_or_prefix)

    def resolve_sweep(self, id_or_prefix: str) -> str:
        """The sweep named by its id (or a unique prefix), by its name (an ``optimize``
        study's), or by the id of one of its tasks."""
        named = replies.raw(self.redis.get(keys.sweep_name(id_or_prefix.strip())))
        if named is not None:
            return named.decode(errors="replace")
        sweep = self.index.resolve_sweep(id_or_prefix)
        if sweep is not None:
            return sweep
        try:
            task_id = self.resolve(id_or_prefix)
        except TaskNotFound:
            raise SweepNotFound(
                f"no sweep or task has an id starting with {id_or_prefix.strip().lower()}; "
                "`enqueue --sweep` prints a sweep's id, `overnight ls` shows tasks'"
            ) from None
        record = self.get(task_id)
        if record.sweep is None:
            raise SweepNotFound(
                f"task {task_id} is in no sweep (only tasks enqueued with --sweep, and their "
                "retries, are); `overnight show` tells where it came from"
            )
        return record.sweep

    def find(self, query: Query) -> list[TaskRecord]:
        """Tasks matching ``query``, newest first, at most ``query.limit``."""
        found: list[TaskRecord] = []
        for chunk in self.index.candidates(query):
            for record in self.get_many(chunk):
                if query.matches(record):
                    found.append(record)
                    if query.limit is not None and len(found) >= query.limit:
                        return found
        return found

    def recorded_snapshot(self, task_id: str) -> Snapshot:
        """The snapshot as it was recorded (before sweep or clone params were set in argv)."""
        record = self.get(task_id)
        spec = self._spec(record)
        return Snapshot(spec=spec, blobs=self.blobs.get_blobs(_blob_shas(spec)))

    def load_snapshot(self, task_id: str) -> Snapshot:
        """What the task runs: its spec, with this task's argv and params, and its blobs."""
        record = self.get(task_id)
        recorded = self._spec(record)
        spec = dataclasses.replace(
            recorded, argv=record.argv, params=dict(record.params), name=record.name
        )
        return Snapshot(spec=spec, blobs=self.blobs.get_blobs(_blob_shas(spec)))

    def _spec(self, record: TaskRecord) -> TaskSpec:
        raw = self.blobs.spec_json(record.spec_id)
        try:
            return TaskSpec.from_json(raw)
        except SpecError as exc:
            raise SpecError(f"task {record.id}: {exc}") from exc

    # -- changing -----------------------------------------------------------------------------

    def transition(
        self,
        task_id: str,
        status: TaskStatus,
        change: Change | None = None,
        *,
        note: str = "",
        expect: Collection[TaskStatus] | None = None,
        at_front: bool = False,
        heartbeat_ttl: float = HEARTBEAT_TTL,
        only_if_silent: bool = False,
        held_by: str | None = None,
        on_queue: str | None = None,
        release: bool = True,
    ) -> TaskRecord:
        """Move a task to ``status`` atomically with its indexes, RQ job and heartbeat.

        With ``expect``, a task in another status raises :class:`InvalidTransition` and nothing is
        written. ``change`` sets record fields (:class:`Change`). ``queued`` starts a new
        attempt: the run fields are cleared. Reaching a final status releases the tasks waiting
        for this one (unless ``release`` is False, for a caller that requeues the task at once).
        ``only_if_silent`` refuses (InvalidTransition) when the task's heartbeat is alive,
        ``held_by`` when the task is not that agent's, ``on_queue`` when it is on another queue
        (moved since it was popped from that one), all checked atomically.
        """
        status = TaskStatus(status)
        if status is TaskStatus.CORRUPT:
            raise ValueError("corrupt is a display status and is never stored")

        def write(old: TaskRecord, pipe: Pipeline) -> TaskRecord:
            if expect is not None and old.status not in expect:
                wanted = " or ".join(sorted(s.value for s in expect))
                raise InvalidTransition(
                    f"task {task_id} is {old.status.value}, not {wanted}; it cannot become "
                    f"{status.value} now"
                )
            if held_by is not None and old.agent != held_by:
                raise InvalidTransition(f"task {task_id} is not agent {held_by}'s now")
            if on_queue is not None and old.options.queue != on_queue:
                raise InvalidTransition(f"task {task_id} moved to queue {old.options.queue}")
            if only_if_silent:
                replies.watch(pipe, keys.heartbeat(task_id))
                if pipe.exists(keys.heartbeat(task_id)):
                    raise InvalidTransition(f"task {task_id} has a live heartbeat")
            new = _changed(old, status, note, change or Change(), time.time())
            state = self.rq.read_state(pipe, task_id, old.options.queue)
            pipe.multi()
            new = _keep_series_apart(new, pipe)
            if status is TaskStatus.QUEUED:
                pipe.delete(keys.series(task_id), keys.metric_series(task_id))
            self.index.move(pipe, old, new)
            self.rq.apply(
                pipe,
                state,
                task_id,
                new.options.queue,
                status,
                after=old.options.after if old.status is TaskStatus.WAITING else (),
                agent=new.agent,
                at_front=at_front,
                previous=old.status,
                old_queue=old.options.queue,
            )
            if new.options.queue != old.options.queue:
                pipe.sadd(keys.QUEUES, new.options.queue)
            if status in ACTIVE_STATUSES:
                pipe.set(keys.heartbeat(task_id), new.agent or "", px=int(heartbeat_ttl * 1000))
            else:
                pipe.delete(keys.heartbeat(task_id))
            if status.is_final or status is TaskStatus.QUEUED:
                pipe.delete(keys.cancel(task_id))
            if status.is_final and new.sweep is not None:
                pipe.sadd(keys.UNTOLD, f"sweep:{new.sweep}")  # maybe its end: agents look
            return new

        old, new = self._update(task_id, write)
        self.acks.confirm(self.redis, f"task {task_id}'s change to {status.value}")
        if release and new.status.is_final and not old.status.is_final:
            self._release_dependents(task_id, new.status)
        return new

    def _release_dependents(self, task_id: str, status: TaskStatus) -> None:
        """Queue or cancel the tasks waiting for ``task_id``, which just became final ``status``."""
        key = keys.dependents(task_id)
        for dependent_id in sorted(replies.text(m) for m in self.redis.smembers(key)):
            try:
                dependent = self.get(dependent_id)
            except (TaskNotFound, CorruptRecord):
                continue
            others = [a for a in dependent.options.after if a != task_id]
            finished = status is TaskStatus.FINISHED
            move = released(dependent, task_id, status, self.get_many(others) if finished else [])
            if move is None:
                continue
            try:
                self.transition(dependent_id, move[0], note=move[1], expect={TaskStatus.WAITING})
            except InvalidTransition:
                continue  # canceled or released by someone else meanwhile
        self.redis.delete(key)

    def _update(
        self, task_id: str, change: Callable[[TaskRecord, Pipeline], TaskRecord]
    ) -> tuple[TaskRecord, TaskRecord]:
        """Read-modify-write a record under WATCH; ``change`` queues its own writes after MULTI."""
        key = keys.task(task_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    replies.watch(pipe, key)
                    raw = _read_record(pipe, task_id)
                    if raw is None:
                        raise TaskNotFound(f"no task {task_id}; `overnight ls` lists tasks")
                    old = _decode(task_id, raw)
                    new = change(old, pipe)
                    if not pipe.explicit_transaction:
                        pipe.multi()
                    pipe.set(key, new.to_json())
                    pipe.execute()
                    return old, new
                except WatchError:
                    continue

    def update_extra(
        self,
        task_id: str,
        extra: Mapping[str, Any],
        *,
        expect: Collection[TaskStatus],
        agent: str,
    ) -> bool:
        """Merge ``extra`` into the record of a task ``agent`` holds in one of ``expect``.

        Nothing is written (and False is returned) when the task moved on, went to another agent,
        is gone or unreadable: a report from a run that is over must not overwrite the final one.
        """

        def change(old: TaskRecord, pipe: Pipeline) -> TaskRecord:
            if old.status not in expect or old.agent != agent:
                raise _Unchanged
            pipe.multi()
            return _keep_series_apart(dataclasses.replace(old, extra={**old.extra, **extra}), pipe)

        try:
            self._update(task_id, change)
        except (_Unchanged, TaskNotFound, CorruptRecord):
            return False
        return True

    def update_metrics(
        self,
        task_id: str,
        metrics: Mapping[str, MetricSummary],
        series: Mapping[str, Any],
        *,
        expect: Collection[TaskStatus],
        agent: str,
    ) -> bool:
        """Set the metric summaries of a task ``agent`` holds in one of ``expect``, and store
        their series (name -> points) in its own key, atomically; False (nothing written) as
        for :meth:`update_extra`."""
        checked = Change(metrics=metrics).metrics  # a malformed summary fails here, not in Redis

        def change(old: TaskRecord, pipe: Pipeline) -> TaskRecord:
            if old.status not in expect or old.agent != agent:
                raise _Unchanged
            pipe.multi()
            pipe.set(keys.metric_series(task_id), json.dumps(series, separators=(",", ":")))
            return dataclasses.replace(old, metrics=dict(checked or {}))

        try:
            self._update(task_id, change)
        except (_Unchanged, TaskNotFound, CorruptRecord):
            return False
        return True

    def metric_series(self, task_id: str) -> dict[str, list[Any]]:
        """The task's metric series (name -> [[seconds, step, value], ...]); {} if none."""
        raw = replies.raw(self.redis.get(keys.metric_series(task_id)))
        try:
            data = json.loads(raw) if raw is not None else {}
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, list)}

    def series(self, task_id: str) -> dict[str, Any]:
        """The task's resource time series (metric -> [[seconds, value], ...]); {} if none."""
        raw = replies.raw(self.redis.get(keys.series(task_id)))
        try:
            data = json.loads(raw) if raw is not None else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def add_note(self, task_id: str, note: str) -> None:
        """Append a line to the task's notes (shown by ``overnight show``)."""

        def change(old: TaskRecord, pipe: Pipeline) -> TaskRecord:
            return dataclasses.replace(old, notes=[*old.notes, note])

        self._update(task_id, change)

    def cancel_requested(self, task_id: str) -> bool:
        return bool(self.redis.exists(keys.cancel(task_id)))

    def requeue(
        self, task_id: str, *, at_front: bool = False, note: str = "", new_attempt: bool = False
    ) -> TaskRecord:
        """Back to ``queued`` on its queue, same id, RQ job pushed again (at the front if asked)."""
        record = self.get(task_id)
        attempt = record.attempt + 1 if new_attempt else record.attempt
        return self.transition(
            task_id,
            TaskStatus.QUEUED,
            Change(attempt=attempt),
            note=note or "requeued",
            at_front=at_front,
        )

    def heartbeat(self, task_id: str, agent: str, ttl: float = HEARTBEAT_TTL) -> None:
        """Say that ``agent`` still works on the task; without one for ``ttl`` s it is lost."""
        self.redis.set(keys.heartbeat(task_id), agent, px=max(1, int(ttl * 1000)))

    def known_queues(self) -> list[str]:
        return sorted(replies.text(q) for q in self.redis.smembers(keys.QUEUES))


def _keep_series_apart(record: TaskRecord, pipe: Pipeline) -> TaskRecord:
    """Queue the write of a resource report's time series to its own key, and return the
    record without it: every ``ls`` reads records, and an 8-GPU series is some 100 KB."""
    report = record.extra.get("resources")
    if not isinstance(report, Mapping) or "series" not in report:
        return record
    kept = {k: v for k, v in report.items() if k != "series"}
    pipe.set(keys.series(record.id), json.dumps(report["series"], separators=(",", ":")))
    return dataclasses.replace(record, extra={**record.extra, "resources": kept})


class _Unchanged(Exception):
    """Raised inside an update to leave the record as it is."""


def corrupt_placeholder(task_id: str, reason: str) -> TaskRecord:
    """A stand-in for a record that cannot be decoded, shown with status ``corrupt``."""
    return TaskRecord(
        id=task_id, spec_id="", options=TaskOptions(), status=TaskStatus.CORRUPT, error=reason
    )


_WRONG_TYPE = (
    "task {}: its Redis key is not a string (changed by hand?); "
    "remove it with `overnight gc --corrupt`"
)


def _read_record(client: redis.Redis | Pipeline, task_id: str) -> bytes | None:
    """The raw record, None when missing; a key of another Redis type is a corrupt record."""
    try:
        return replies.raw(client.get(keys.task(task_id)))
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        raise CorruptRecord(_WRONG_TYPE.format(task_id)) from exc


def _not_strings(client: redis.Redis, task_ids: Sequence[str]) -> set[str]:
    """Which of these ids (MGET said nil) have a record key of another type than string."""
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.type(keys.task(task_id))
    found = pipe.execute()
    return {t for t, kind in zip(task_ids, found, strict=True) if replies.text(kind) != "none"}


def _decode(task_id: str, raw: bytes) -> TaskRecord:
    try:
        record = TaskRecord.from_json(raw)
    except CorruptRecord as exc:
        raise CorruptRecord(
            f"task {task_id}: {exc}; remove it with `overnight gc --corrupt`"
        ) from exc
    if record.status is TaskStatus.CORRUPT:
        raise CorruptRecord(f"task {task_id}: stored status 'corrupt' is not a real status")
    if record.id != task_id:
        raise CorruptRecord(
            f"task {task_id}: its record names task {record.id!r}; "
            "remove it with `overnight gc --corrupt`"
        )
    return record


def _blob_shas(spec: TaskSpec) -> list[str]:
    return [ref.sha256 for ref in spec.blob_refs()]


def _changed(
    old: TaskRecord, status: TaskStatus, note: str, change: Change, now: float
) -> TaskRecord:
    history = list(old.history)
    if status is not old.status or note:
        history.append(StatusChange(status, now, note))
    new = dataclasses.replace(old, status=status, history=history)
    if status is TaskStatus.QUEUED:
        new = dataclasses.replace(
            new,
            extra={k: v for k, v in old.extra.items() if k not in RUN_EXTRA},
            metrics={},
            agent=None,
            gpu_ids=(),
            started=None,
            ended=None,
            exit_code=None,
            phase=None,
            error=None,
            failure=None,
        )
    if status is TaskStatus.RUNNING and new.started is None:
        new.started = now
    if status.is_final:
        new.ended = now
    return change.applied(new)
