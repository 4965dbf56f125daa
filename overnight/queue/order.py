"""Changing the order of queued tasks: bump to the front, hold and release, move to a queue.

Each change is atomic against agents taking tasks. A bump is one Lua script over the RQ queue
list (an id an agent popped meanwhile is not in it, so it is not pushed again). Hold, release and
move are transitions of the record (:meth:`TaskStore.transition`, under WATCH), which agents'
claims also are (``queued`` -> ``preparing``): of a hold and a claim, exactly one wins, and the
RQ side (the queue list, the deferred registry, where a held task stood) changes with the record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from overnight.errors import InvalidTransition, UsageError
from overnight.queue import replies, rqsync
from overnight.queue.index import Query
from overnight.queue.records import Change, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import check_queue_name

_BUMP = """
local moved = {}
for i = #ARGV, 1, -1 do
  if redis.call('LREM', KEYS[1], 0, ARGV[i]) > 0 then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    table.insert(moved, ARGV[i])
  end
end
return moved
"""
"""The ids still in the queue list, in ARGV's order, at its front; returns those it moved."""

_MOVABLE = frozenset({TaskStatus.QUEUED, TaskStatus.HELD})


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which tasks a command means: ids (or prefixes), every task with ``tag`` and every task of
    ``sweep`` (a sweep id, a unique prefix of one, or the id of one of its tasks)."""

    ids: tuple[str, ...] = ()
    tag: str | None = None
    sweep: str | None = None

    def __post_init__(self) -> None:
        if not self.ids and self.tag is None and self.sweep is None:
            raise UsageError("name the tasks: give IDs, --tag T or --sweep ID")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a command did: the tasks it changed, and why each other one was left as it was."""

    changed: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (task id, why)


def select(
    store: TaskStore, selection: Selection, statuses: Iterable[TaskStatus]
) -> list[TaskRecord]:
    """The selected tasks: named ones in the order given, then tagged ones and the sweep's
    oldest first (those not in ``statuses`` only when named, so that the command can say why it
    skips them)."""
    wanted = frozenset(statuses)
    ids = [store.resolve(i) for i in selection.ids]
    records = store.get_many(list(dict.fromkeys(ids)))
    queries = []
    if selection.tag is not None:
        queries.append(Query(tag=selection.tag, limit=None))
    if selection.sweep is not None:
        queries.append(Query(sweep=store.resolve_sweep(selection.sweep), limit=None))
    known = {r.id for r in records}
    found: dict[str, TaskRecord] = {}
    for query in queries:
        for status in sorted(wanted, key=lambda s: s.value):
            for r in store.find(dataclasses.replace(query, statuses=frozenset({status}))):
                if r.id not in known:
                    found[r.id] = r
    return records + sorted(found.values(), key=lambda r: r.created)


def bump(store: TaskStore, selection: Selection) -> Outcome:
    """Move the selected queued tasks to the front of their queues: named ones in the order
    given, tagged ones in their present order."""
    records = select(store, selection, {TaskStatus.QUEUED})
    skipped = [(r.id, _not(r, "queued")) for r in records if r.status is not TaskStatus.QUEUED]
    by_queue: dict[str, list[str]] = {}
    for record in records:
        if record.status is TaskStatus.QUEUED:
            by_queue.setdefault(record.options.queue, []).append(record.id)
    named = {t: n for n, t in enumerate(dict.fromkeys(store.resolve(i) for i in selection.ids))}
    changed: list[str] = []
    for queue, ids in by_queue.items():
        now = {t: n for n, t in enumerate(queue_order(store, queue))}
        ids.sort(key=lambda t: (t not in named, named.get(t, now.get(t, len(now)))))
        moved = set(replies.texts(store.redis.eval(_BUMP, 1, rqsync.queue_key(queue), *ids)))
        changed += [t for t in ids if t in moved]
        skipped += [(t, "taken by an agent meanwhile") for t in ids if t not in moved]
    return Outcome(tuple(changed), tuple(skipped))


def hold(store: TaskStore, selection: Selection) -> Outcome:
    """Keep the selected queued tasks from being taken (status ``held``), each remembering
    where it stood in its queue."""
    return _each(
        store,
        select(store, selection, {TaskStatus.QUEUED}),
        lambda r: store.transition(r.id, TaskStatus.HELD, note="held", expect={TaskStatus.QUEUED}),
        "queued",
    )


def release(store: TaskStore, selection: Selection) -> Outcome:
    """Queue the selected held tasks again where they stood (:data:`rqsync._RESTORE_PLACE`)."""
    return _each(
        store,
        select(store, selection, {TaskStatus.HELD}),
        lambda r: store.transition(
            r.id, TaskStatus.QUEUED, note="released", expect={TaskStatus.HELD}
        ),
        "held",
    )


def move(store: TaskStore, selection: Selection, queue: str, *, at_front: bool = False) -> Outcome:
    """Put the selected queued or held tasks on ``queue`` (at its back, or front), same status."""
    check_queue_name(queue)
    records = [
        r
        for r in select(store, selection, _MOVABLE)
        if r.options.queue != queue or r.status not in _MOVABLE
    ]
    return _each(
        store,
        list(reversed(records)) if at_front else records,
        lambda r: store.transition(
            r.id,
            r.status,
            Change(queue=queue),
            note=f"moved from queue {r.options.queue} to {queue}",
            expect={r.status} if r.status in _MOVABLE else _MOVABLE,
            at_front=at_front,
        ),
        "queued or held",
    )


def queue_order(store: TaskStore, queue: str) -> list[str]:
    """The ids in ``queue``'s RQ list, the next one to be taken first."""
    return replies.texts(store.redis.lrange(rqsync.queue_key(queue), 0, -1))


def _each(
    store: TaskStore,
    records: Sequence[TaskRecord],
    change: Callable[[TaskRecord], object],
    wanted: str,
) -> Outcome:
    changed, skipped = [], []
    for record in records:
        try:
            change(record)
        except InvalidTransition:
            skipped.append((record.id, _not(store.get(record.id), wanted)))
            continue
        changed.append(record.id)
    return Outcome(tuple(changed), tuple(skipped))


def _not(record: TaskRecord, wanted: str) -> str:
    return f"it is {record.status.value}, not {wanted}"
