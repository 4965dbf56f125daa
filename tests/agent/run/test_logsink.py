from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import redis

from overnight.agent.run.logbatch import Notice, Output
from overnight.agent.run.logsink import LogSink

Line = tuple[float, str]
Entry = tuple[float, str, bool]


class FlakyStore:
    """An append that fails like an unreachable Redis while ``down`` is set."""

    def __init__(self) -> None:
        self.down = False
        self.lines: list[Line] = []
        self.by_agent: list[str] = []  # the texts of the lines marked as the agent's
        self.calls = 0

    def append(self, batch: Sequence[Entry]) -> None:
        self.calls += 1
        if self.down:
            raise redis.exceptions.ConnectionError("Connection refused")
        self.lines.extend((at, text) for at, text, _ in batch)
        self.by_agent.extend(text for _, text, agent in batch if agent)


def lines(start: int, count: int) -> list[Line]:
    return [(float(i), f"line {i}") for i in range(start, start + count)]


def test_lines_go_straight_through_while_redis_answers(tmp_path: Path) -> None:
    store = FlakyStore()
    sink = LogSink(store.append, tmp_path / "spill.jsonl")
    sink(lines(0, 3))
    sink.line("prepared")
    assert sink.flush()
    assert [t for _, t in store.lines] == ["line 0", "line 1", "line 2", "prepared"]
    assert sink.pending == 0


def test_agent_lines_wait_for_the_next_batch_or_flush_and_go_in_one_call(
    tmp_path: Path,
) -> None:
    store = FlakyStore()
    sink = LogSink(store.append, tmp_path / "spill.jsonl")
    sink.line("rebuilding the working tree")
    sink.line("preparing the venv")
    assert (store.calls, sink.pending) == (0, 2)
    sink(lines(0, 2))
    assert store.calls == 1
    assert [t for _, t in store.lines] == [
        "rebuilding the working tree",
        "preparing the venv",
        "line 0",
        "line 1",
    ]
    sink.line("cancel requested")
    assert sink.flush(force=False) and store.calls == 2 and sink.pending == 0
    assert store.lines[-1][1] == "cancel requested"


def test_agent_lines_written_during_an_outage_keep_their_place(tmp_path: Path) -> None:
    store = FlakyStore()
    sink = LogSink(store.append, tmp_path / "spill.jsonl", retry_interval=3600.0)
    store.down = True
    sink(lines(0, 2))
    sink.line("note")
    assert not sink.flush(force=False)
    sink(lines(2, 1))
    store.down = False
    assert sink.flush()
    assert [t for _, t in store.lines] == ["line 0", "line 1", "note", "line 2"]


def test_outage_holds_lines_and_replays_them_in_order(tmp_path: Path) -> None:
    store = FlakyStore()
    sink = LogSink(store.append, tmp_path / "spill.jsonl", retry_interval=0.0)
    sink(lines(0, 2))
    store.down = True
    sink(lines(2, 3))
    sink(lines(5, 3))
    assert sink.pending == 6
    assert not sink.flush()
    store.down = False
    sink(lines(8, 2))  # a new batch after the outage goes behind the held ones
    assert sink.pending == 0
    assert store.lines == lines(0, 10)


def test_a_long_outage_spills_to_disk_with_memory_bounded(tmp_path: Path) -> None:
    store = FlakyStore()
    spill = tmp_path / "spill" / "task.jsonl"
    sink = LogSink(store.append, spill, memory_bytes=2000, retry_interval=3600.0)
    store.down = True
    for start in range(0, 5000, 100):
        sink(lines(start, 100))
    assert spill.exists()
    assert sink._held_bytes <= 2000 + 100 * 64  # at most one batch above the bound
    assert sink.pending == 5000
    calls = store.calls
    sink(lines(5000, 1))  # during the retry interval no new attempt is made
    assert store.calls == calls
    store.down = False
    assert sink.flush()
    assert store.lines == lines(0, 5001)
    assert not spill.exists()


def test_redis_failing_again_mid_replay_loses_and_repeats_nothing(tmp_path: Path) -> None:
    store = FlakyStore()
    sink = LogSink(store.append, tmp_path / "s.jsonl", memory_bytes=100, retry_interval=0.0)
    store.down = True
    sink(lines(0, 5000))
    sink(lines(5000, 10))
    real_append = store.append
    sent = 0

    def fail_after_one_chunk(batch: Sequence[Entry]) -> None:
        nonlocal sent
        if sent:
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        sent += 1
        real_append(batch)

    store.down = False
    sink._append = fail_after_one_chunk
    assert not sink.flush()
    assert 0 < len(store.lines) < 5010
    sink._append = real_append
    assert sink.flush()
    assert store.lines == lines(0, 5010)


def test_a_sink_bug_drops_the_batch_but_never_raises(tmp_path: Path) -> None:
    def broken(batch: Sequence[Entry]) -> None:
        raise ValueError("bad data")

    sink = LogSink(broken, tmp_path / "s.jsonl")
    sink(lines(0, 2))
    assert sink.pending == 0


@pytest.mark.parametrize("down", [False, True])
def test_close_keeps_the_spill_file_only_while_lines_are_pending(
    tmp_path: Path, down: bool
) -> None:
    store = FlakyStore()
    spill = tmp_path / "s.jsonl"
    sink = LogSink(store.append, spill, memory_bytes=10, retry_interval=3600.0)
    store.down = True
    sink(lines(0, 50))
    store.down = down
    if not down:
        sink.flush()
    sink.close()
    assert spill.exists() == down


def test_the_agents_lines_are_marked_through_outages_and_spills(tmp_path: Path) -> None:
    store = FlakyStore()
    sink = LogSink(store.append, tmp_path / "s.jsonl", memory_bytes=100, retry_interval=0.0)
    store.down = True
    sink.line("[overnight] preparing the venv")
    sink.line(Output("[overnight] a build's output"))
    sink([(1.0, "[overnight] task finished"), (2.0, Notice("[overnight] 3 log lines dropped"))])
    sink(lines(0, 20))  # past the memory bound: spilled
    assert (tmp_path / "s.jsonl").exists()
    store.down = False
    assert sink.flush()
    assert store.by_agent == ["[overnight] preparing the venv", "[overnight] 3 log lines dropped"]
    assert len(store.lines) == 24
