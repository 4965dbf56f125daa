from __future__ import annotations

import pytest
import redis

from overnight.errors import AmbiguousTaskId
from overnight.queue import keys
from overnight.queue.index import Query
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit, submit_sweep
from overnight.queue.sweeps import Sweep
from tests.fixtures.tasks import make_snapshot


def test_find_newest_first_with_filters(store: TaskStore, redis_client: redis.Redis) -> None:
    made = []
    for i in range(12):
        queue = "gpu" if i % 2 else "cpu"
        tags = ("ablation",) if i % 3 == 0 else ()
        made.append(submit(store, make_snapshot(tags=tags), TaskOptions(queue=queue)))
    store.transition(made[5].id, TaskStatus.RUNNING, Change(agent="box"))
    ids = [r.id for r in made]
    assert [r.id for r in store.find(Query(limit=None))] == ids[::-1]
    assert [r.id for r in store.find(Query(limit=3))] == ids[::-1][:3]
    assert [r.id for r in store.find(Query(queue="gpu", limit=None))] == ids[1::2][::-1]
    assert [r.id for r in store.find(Query(tag="ablation", limit=None))] == ids[::3][::-1]
    running = Query(statuses=frozenset({TaskStatus.RUNNING}), limit=None)
    assert [r.id for r in store.find(running)] == [made[5].id]
    both = Query(queue="cpu", statuses=frozenset({TaskStatus.RUNNING}), limit=None)
    assert store.find(both) == []
    several = Query(statuses=frozenset({TaskStatus.RUNNING, TaskStatus.QUEUED}), limit=2)
    assert len(store.find(several)) == 2
    since = Query(since=made[9].created, limit=None)
    assert {r.id for r in store.find(since)} >= {r.id for r in made[9:]}


def test_corrupt_record_is_listed_as_corrupt(store: TaskStore, redis_client: redis.Redis) -> None:
    good = submit(store, make_snapshot(), TaskOptions())
    bad = submit(store, make_snapshot(), TaskOptions())
    redis_client.set(keys.task(bad.id), b'{"id": "truncated')
    listed = store.find(Query())
    assert [(r.id, r.status) for r in listed] == [
        (bad.id, TaskStatus.CORRUPT),
        (good.id, TaskStatus.QUEUED),
    ]
    only_corrupt = store.find(Query(statuses=frozenset({TaskStatus.CORRUPT})))
    assert [r.id for r in only_corrupt] == [bad.id]
    assert [r.id for r in store.find(Query(statuses=frozenset({TaskStatus.QUEUED})))] == [good.id]


def test_a_sweep_is_indexed_and_found_by_its_id_or_a_prefix(
    store: TaskStore, redis_client: redis.Redis
) -> None:
    snapshot = make_snapshot(("python", "train.py", "--lr", "1"))
    sweep = submit_sweep(store, snapshot, TaskOptions(), [Sweep("lr", ("0.1", "0.01"))])
    other = submit_sweep(store, snapshot, TaskOptions(), [Sweep("lr", ("0.5",))])
    lone = submit(store, snapshot, TaskOptions())
    sweep_id = sweep[0].sweep
    assert sweep_id is not None and sweep_id == sweep[1].sweep != other[0].sweep
    assert lone.sweep is None
    assert store.index.resolve_sweep(sweep_id[:5]) == sweep_id
    assert store.index.resolve_sweep("0" * 12 if sweep_id != "0" * 12 else "1" * 12) is None
    found = store.find(Query(sweep=sweep_id, limit=None))
    assert [r.id for r in found] == [sweep[1].id, sweep[0].id]
    assert redis_client.zcard(keys.by_sweep(sweep_id)) == 2  # the listing reads this index alone

    redis_client.zadd(keys.SWEEPS, {sweep_id[:4] + "f" * 8: 0, sweep_id[:4] + "e" * 8: 0})
    redis_client.zadd(keys.by_sweep(sweep_id[:4] + "e" * 8), {"x": 0})
    with pytest.raises(AmbiguousTaskId, match="several sweeps"):
        store.index.resolve_sweep(sweep_id[:4])
    redis_client.delete(keys.by_sweep(sweep_id[:4] + "e" * 8))
    # A sweep whose tasks are gone is no candidate: the prefix names the live one.
    assert store.index.resolve_sweep(sweep_id[:4]) == sweep_id


def test_grep_and_param_filters(store: TaskStore) -> None:
    first = submit(
        store,
        make_snapshot(("python", "train.py", "--lr", "0.10", "--bs", "32"), note="Warmup test"),
        TaskOptions(),
    )
    second = submit(
        store,
        make_snapshot(("python", "eval.py", "--lr", "0.01"), name="evaluate", tags=("ablation",)),
        TaskOptions(),
    )
    store.add_note(second.id, "retried as 0123")

    def ids(**query: object) -> list[str]:
        return [r.id for r in store.find(Query(limit=None, **query))]  # type: ignore[arg-type]

    assert ids(grep="warmup") == [first.id]  # the note, in any case
    assert ids(grep="EVAL") == [second.id]  # name and command
    assert ids(grep="ablat") == [second.id]  # a tag
    assert ids(grep="retried as") == [second.id]  # the notes
    assert ids(grep="train.py --lr") == [first.id]  # the command as one line
    assert ids(grep="nothing") == []
    assert ids(params=(("lr", "0.1"),)) == [first.id]  # 0.10 is 0.1
    assert ids(params=(("lr", "0.1"), ("bs", "32"))) == [first.id]
    assert ids(params=(("lr", "0.1"), ("bs", "64"))) == []
    assert ids(params=(("bs", "32"),), grep="eval") == []
    assert ids(params=(("lr", "1e-2"),)) == [second.id]
