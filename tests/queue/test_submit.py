"""Submitting: a task or a sweep in one Redis round trip, its blobs stored once."""

from __future__ import annotations

from typing import Any, ClassVar

import redis

from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import INLINE_BLOB_BYTES, submit, submit_sweep
from overnight.queue.sweeps import Sweep
from tests.fixtures.tasks import make_snapshot


class CountingConnection(redis.Connection):
    """A connection that notes the bytes of each send: one send is one round trip to Redis."""

    sends: ClassVar[list[int]] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        parts = command if isinstance(command, list) else [command]
        CountingConnection.sends.append(sum(len(part) for part in parts))
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def counting_store(redis_url: str) -> TaskStore:
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    client.ping()  # connected (HELLO, CLIENT SETINFO) before counting
    CountingConnection.sends = []
    return TaskStore(client)


def test_a_sweep_is_one_round_trip(redis_url: str, store: TaskStore) -> None:
    counted = counting_store(redis_url)
    sweep = [Sweep("lr", ("0.1", "0.01")), Sweep("bs", ("32", "64"))]
    snapshot = make_snapshot(bundle=b"a bundle")
    records = submit_sweep(counted, snapshot, TaskOptions(), sweep, add_params=True)
    assert len(CountingConnection.sends) == 1
    assert [store.get(r.id).status for r in records] == [TaskStatus.QUEUED] * 4
    assert store.load_snapshot(records[3].id).spec.params["bs"] == "64"


def test_after_adds_one_read_of_the_tasks_waited_for(redis_url: str, store: TaskStore) -> None:
    first = submit(store, make_snapshot(), TaskOptions())
    counted = counting_store(redis_url)
    second = submit(counted, make_snapshot(), TaskOptions(after=(first.id,)))
    assert len(CountingConnection.sends) == 3  # WATCH, MGET, then the transaction
    assert store.get(second.id).status is TaskStatus.WAITING


def test_a_large_blob_already_stored_is_not_sent_again(redis_url: str, store: TaskStore) -> None:
    bundle = b"b" * (INLINE_BLOB_BYTES + 1)
    submit(store, make_snapshot(bundle=bundle), TaskOptions())
    counted = counting_store(redis_url)
    again = submit(counted, make_snapshot(bundle=bundle), TaskOptions())
    sent = CountingConnection.sends
    assert len(sent) == 2 and sum(sent) < INLINE_BLOB_BYTES  # EXISTS, then the transaction
    snapshot = store.load_snapshot(again.id)
    assert snapshot.spec.bundle is not None and snapshot.blob(snapshot.spec.bundle) == bundle
