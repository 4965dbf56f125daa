from __future__ import annotations

import redis

from overnight.queue import keys
from overnight.queue.index import Query
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
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
