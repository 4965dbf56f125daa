"""Indexes over task records: sorted sets by creation time, queue, status, tag and sweep, and by
id (task ids and sweep ids).

Listing reads the narrowest index newest-first and filters the few records it fetches, so
``overnight ls`` costs the same with a hundred tasks or a hundred thousand; nothing scans the
keyspace. Every index is scored by creation time; the id index (score 0) answers prefix lookups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator

import redis
from redis.client import Pipeline

from overnight.errors import AmbiguousTaskId, TaskNotFound
from overnight.queue import keys, replies
from overnight.queue.records import TaskRecord, TaskStatus

_CHUNK = 200
_MAX_CHUNK = 2000


@dataclasses.dataclass(frozen=True)
class Query:
    """What ``overnight ls`` asks for; empty filters match everything.

    ``grep`` is a case-insensitive substring of the task's name, note, notes, tags or command;
    ``params`` are (name, value) pairs the task's params must all have (values compared as
    numbers when both are numbers: ``lr=0.10`` finds ``--lr 0.1``).
    """

    queue: str | None = None
    statuses: frozenset[TaskStatus] = frozenset()
    tag: str | None = None
    since: float | None = None  # unix time; only tasks created at or after it
    sweep: str | None = None  # a full sweep id
    grep: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    limit: int | None = 50

    def matches(self, record: TaskRecord) -> bool:
        if record.status is TaskStatus.CORRUPT:
            # Its fields cannot be checked; it is in the index that drove the listing.
            return not self.statuses or TaskStatus.CORRUPT in self.statuses
        return (
            (self.queue is None or record.options.queue == self.queue)
            and (not self.statuses or record.status in self.statuses)
            and (self.tag is None or self.tag in record.tags)
            and (self.since is None or record.created >= self.since)
            and (self.sweep is None or record.sweep == self.sweep)
            and (self.grep is None or _mentions(record, self.grep))
            and all(_same_value(record.params.get(k), v) for k, v in self.params)
        )


def _mentions(record: TaskRecord, text: str) -> bool:
    wanted = text.casefold()
    fields = [record.name or "", record.note, *record.notes, *record.tags, " ".join(record.argv)]
    return any(wanted in field.casefold() for field in fields)


def _same_value(value: str | None, wanted: str) -> bool:
    if value is None:
        return False
    if value == wanted:
        return True
    try:
        return float(value) == float(wanted)
    except ValueError:
        return False


class TaskIndex:
    """Maintains and reads the task indexes."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client

    @staticmethod
    def add(pipe: Pipeline, record: TaskRecord) -> None:
        score = {record.id: record.created}
        pipe.zadd(keys.BY_CREATED, score)
        pipe.zadd(keys.BY_ID, {record.id: 0})
        pipe.zadd(keys.by_queue(record.options.queue), score)
        pipe.zadd(keys.by_status(record.status.value), score)
        for tag in record.tags:
            pipe.zadd(keys.by_tag(tag), score)
        if record.sweep is not None:
            pipe.zadd(keys.by_sweep(record.sweep), score)
            pipe.zadd(keys.SWEEPS, {record.sweep: 0})

    @staticmethod
    def move(pipe: Pipeline, old: TaskRecord, new: TaskRecord) -> None:
        if old.options.queue != new.options.queue:
            pipe.zrem(keys.by_queue(old.options.queue), old.id)
            pipe.zadd(keys.by_queue(new.options.queue), {new.id: new.created})
        if old.status is not new.status:
            pipe.zrem(keys.by_status(old.status.value), old.id)
            pipe.zadd(keys.by_status(new.status.value), {new.id: new.created})

    @staticmethod
    def remove(pipe: Pipeline, record: TaskRecord) -> None:
        pipe.zrem(keys.BY_CREATED, record.id)
        pipe.zrem(keys.BY_ID, record.id)
        pipe.zrem(keys.by_queue(record.options.queue), record.id)
        for status in TaskStatus:
            if status is not TaskStatus.CORRUPT:
                pipe.zrem(keys.by_status(status.value), record.id)
        for tag in record.tags:
            pipe.zrem(keys.by_tag(tag), record.id)
        if record.sweep is not None:
            pipe.zrem(keys.by_sweep(record.sweep), record.id)

    def resolve(self, id_or_prefix: str) -> str:
        """The full id of the one task whose id starts with ``id_or_prefix``, like git."""
        text = id_or_prefix.strip().lower()
        if not keys.looks_like_id(text):
            raise TaskNotFound(
                f"{id_or_prefix!r} is not a task id (ids are hex, like 3f9a1c2b7d4e); "
                "`overnight ls` lists tasks"
            )
        found = [
            replies.text(m)
            for m in self._redis.zrangebylex(keys.BY_ID, f"[{text}", f"[{text}\xff", start=0, num=6)
        ]
        if not found:
            raise TaskNotFound(
                f"no task has an id starting with {text}; `overnight ls` lists tasks"
            )
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise AmbiguousTaskId(
                f"id prefix {text} matches several tasks ({shown}); type more characters"
            )
        return found[0]

    def resolve_sweep(self, id_or_prefix: str) -> str | None:
        """The full id of the one sweep whose id starts with ``id_or_prefix``, or None if none does
        (sweeps whose tasks were all removed do not count)."""
        text = id_or_prefix.strip().lower()
        if not keys.looks_like_id(text):
            return None
        found = [
            replies.text(m)
            for m in self._redis.zrangebylex(
                keys.SWEEPS, f"[{text}", f"[{text}\xff", start=0, num=6
            )
        ]
        pipe = self._redis.pipeline(transaction=False)
        for sweep in found:
            pipe.exists(keys.by_sweep(sweep))
        live = [sweep for sweep, exists in zip(found, pipe.execute(), strict=True) if exists]
        if len(live) > 1:
            shown = ", ".join(live[:5]) + (", ..." if len(live) > 5 else "")
            raise AmbiguousTaskId(
                f"id prefix {text} matches several sweeps ({shown}); type more characters"
            )
        return live[0] if live else None

    def prune_sweeps(self, sweeps: Collection[str]) -> None:
        """Forget the ids of these sweeps that have no task left (after gc removed tasks)."""
        sweeps = list(sweeps)
        pipe = self._redis.pipeline(transaction=False)
        for sweep in sweeps:
            pipe.exists(keys.by_sweep(sweep))
        gone = [s for s, exists in zip(sweeps, pipe.execute(), strict=True) if not exists]
        if gone:
            self._redis.zrem(keys.SWEEPS, *gone)

    def ids(self, statuses: Collection[TaskStatus]) -> list[str]:
        """All ids with one of these statuses (meant for the small active sets)."""
        pipe = self._redis.pipeline(transaction=False)
        for status in statuses:
            pipe.zrange(keys.by_status(status.value), 0, -1)
        return [replies.text(m) for members in pipe.execute() for m in members]

    def ids_older_than(self, cutoff: float) -> list[str]:
        return [replies.text(m) for m in self._redis.zrangebyscore(keys.BY_CREATED, "-inf", cutoff)]

    def count(self, queue: str | None = None) -> int:
        return int(self._redis.zcard(keys.by_queue(queue) if queue else keys.BY_CREATED))

    def candidates(self, query: Query) -> Iterator[list[str]]:
        """Chunks of ids, newest first, from the narrowest index the query allows.

        The first chunk is the size of the limit; later ones grow, for filters that reject many.
        """
        driver = self._driver(query)
        low = "-inf" if query.since is None else query.since
        offset = 0
        size = min(query.limit or _CHUNK, _CHUNK)
        while True:
            chunk = self._redis.zrevrangebyscore(driver, "+inf", low, start=offset, num=size)
            if not chunk:
                return
            yield [replies.text(m) for m in chunk]
            offset += len(chunk)
            size = min(size * 2, _MAX_CHUNK)

    def _driver(self, query: Query) -> str:
        options = []
        if query.queue is not None:
            options.append(keys.by_queue(query.queue))
        if query.tag is not None:
            options.append(keys.by_tag(query.tag))
        if query.sweep is not None:
            options.append(keys.by_sweep(query.sweep))
        if len(query.statuses) == 1 and TaskStatus.CORRUPT not in query.statuses:
            options.append(keys.by_status(next(iter(query.statuses)).value))
        if not options:
            return keys.BY_CREATED
        pipe = self._redis.pipeline(transaction=False)
        for key in options:
            pipe.zcard(key)
        sizes = pipe.execute()
        return min(zip(sizes, options, strict=True))[1]
