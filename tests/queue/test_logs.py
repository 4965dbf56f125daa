from __future__ import annotations

import threading
import time

import redis

from overnight.queue import keys
from overnight.queue.logs import LogStore
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.tasks import make_snapshot


def test_append_read_and_tail(redis_client: redis.Redis) -> None:
    logs = LogStore(redis_client)
    logs.append("t1", [(100.0, "one"), (100.5, "two ✓")])
    logs.append("t1", [(101.0, "three")])
    entries = logs.read("t1")
    assert [(e.time, e.line) for e in entries] == [
        (100.0, "one"),
        (100.5, "two ✓"),
        (101.0, "three"),
    ]
    assert [e.line for e in logs.read("t1", after=entries[0].id)] == ["two ✓", "three"]
    assert [e.line for e in logs.tail("t1", 2)] == ["two ✓", "three"]
    assert logs.size("t1") == len("onetwo ✓three".encode())
    logs.delete("t1")
    assert logs.read("t1") == []


def test_cap_trims_the_head_and_leaves_a_marker(redis_client: redis.Redis) -> None:
    logs = LogStore(redis_client, cap_bytes=1000)
    for batch in range(10):
        logs.append("t1", [(float(batch), f"{batch}:{i:02d}" + "x" * 45) for i in range(10)])
    entries = logs.read("t1")
    assert entries[0].marker
    assert "earlier lines" in entries[0].line and "trimmed" in entries[0].line
    kept = entries[1:]
    assert kept[-1].line.startswith("9:09")
    assert sum(len(e.line) for e in kept) <= 1000
    assert logs.size("t1") == sum(len(e.line) for e in kept)
    trimmed = int(entries[0].line.split("[overnight: ")[1].split(" ")[0])
    assert trimmed + len(kept) == 100
    assert logs.tail("t1", 3)[0].marker is False
    assert logs.tail("t1", 1000)[0].marker is True


def test_one_line_larger_than_the_cap_keeps_the_newest(redis_client: redis.Redis) -> None:
    logs = LogStore(redis_client, cap_bytes=10)
    logs.append("t1", [(1.0, "a" * 50), (2.0, "b" * 50)])
    entries = logs.read("t1")
    assert entries[0].marker and [e.line for e in entries[1:]] == ["b" * 50]


def test_follow_streams_until_the_task_ends(store: TaskStore) -> None:
    record = submit(store, make_snapshot(), TaskOptions())
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    store.logs.append(record.id, [(1.0, "before")])

    def agent() -> None:
        for i in range(3):
            time.sleep(0.05)
            store.logs.append(record.id, [(2.0 + i, f"line {i}")])
        store.transition(record.id, TaskStatus.FINISHED, Change(exit_code=0))

    thread = threading.Thread(target=agent)
    thread.start()
    lines = [
        e.line
        for e in store.logs.follow(
            record.id, until=lambda: store.get(record.id).status.is_final, block=0.1
        )
    ]
    thread.join()
    assert lines == ["before", "line 0", "line 1", "line 2"]


def test_the_agents_lines_are_marked_and_task_lines_cannot_pass_for_them(
    redis_client: redis.Redis,
) -> None:
    logs = LogStore(redis_client)
    logs.append("t1", [(1.0, "[overnight] preparing the venv", True), (2.0, "hello")])
    logs.append("t1", [(3.0, "[overnight] task finished"), (4.0, "[overnight: 9 lines trimmed]")])
    entries = logs.read("t1")
    assert [e.agent for e in entries] == [True, False, False, False]
    assert [e.forged for e in entries] == [False, False, True, True]
    assert [e.agent for e in logs.tail("t1", 4)] == [True, False, False, False]
    follow = logs.follow("t1", until=lambda: True)
    assert [e.forged for e in follow] == [False, False, True, True]


def test_a_log_written_before_the_marks_counts_overnight_lines_as_the_agents(
    redis_client: redis.Redis,
) -> None:
    for line in ("[overnight] preparing the venv", "hello"):  # as an older agent wrote them
        redis_client.xadd(keys.log("t1"), {"t": "1.000", "line": line})
    entries = LogStore(redis_client).read("t1")
    assert [(e.agent, e.forged) for e in entries] == [(True, False), (False, False)]
