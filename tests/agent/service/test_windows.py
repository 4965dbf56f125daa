from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overnight.agent.gpus.inventory import FakeInventory
from overnight.agent.service.windows import FakeClock, Span, SystemClock, Windows, parse_window
from overnight.errors import UsageError
from overnight.queue.agents import AgentRegistry
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import Background, enqueue, log_text, wait_for, wait_status
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import cli_output, gpu_agent, wait_output


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """January 2024: the 1st is a Monday, so ``day`` 1..7 is mon..sun and 8 the next monday."""
    return datetime(2024, 1, day, hour, minute, second)


WEEKEND = Windows.parse("fri 19:00-mon 07:00")


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (at(5, 18, 59), False),
        (at(5, 19, 0), True),
        (at(6, 12), True),
        (at(7, 23, 59, 59), True),
        (at(8, 6, 59), True),  # across the week's end
        (at(8, 7, 0), False),
        (at(3, 12), False),
    ],
)
def test_weekend_uptime(when: datetime, expected: bool) -> None:
    assert WEEKEND.is_open(when) is expected


def test_weekend_next_change_across_the_week_wrap() -> None:
    assert WEEKEND.next_change(at(3, 12, 30, 15)) == at(5, 19)
    assert WEEKEND.next_change(at(6, 3)) == at(8, 7)
    assert WEEKEND.next_change(at(5, 19)) == at(8, 7)  # at the edge: the change after it
    assert WEEKEND.describe(at(3, 12)) == "closed until fri 19:00"
    assert WEEKEND.describe(at(7, 12)) == "open until mon 07:00"


def test_fake_clock_moves_through_a_week() -> None:
    clock = FakeClock(at(1, 8))
    changes = []
    state = WEEKEND.is_open(clock.now())
    while clock.now() < at(8, 12):
        clock.advance(minutes=30)
        if WEEKEND.is_open(clock.now()) != state:
            state = not state
            changes.append(clock.now())
    assert changes == [at(5, 19), at(8, 7)]
    clock.set(at(2, 9))
    assert clock.now() == at(2, 9)
    assert clock.advance(timedelta(hours=1)) == at(2, 10)


def test_daily_window_past_midnight() -> None:
    nightly = Windows.parse("19:00-07:00")
    assert nightly.is_open(at(2, 23))
    assert nightly.is_open(at(3, 6, 59))
    assert not nightly.is_open(at(3, 12))
    assert nightly.next_change(at(3, 12)) == at(3, 19)
    assert nightly.next_change(at(3, 20)) == at(4, 7)
    assert nightly.is_open(at(8, 2))  # sunday night into monday


def test_several_windows_by_comma_and_by_repeated_flag() -> None:
    by_comma = Windows.parse("mon 12:00-mon 13:00, wed 12:00-wed 13:00")
    repeated = Windows.parse(["mon 12:00-mon 13:00", "wed 12:00-wed 13:00"])
    for w in (by_comma, repeated):
        assert w.is_open(at(1, 12, 30))
        assert not w.is_open(at(2, 12, 30))
        assert w.is_open(at(3, 12, 30))
        assert w.next_change(at(1, 13)) == at(3, 12)
    assert repeated.to_dict() == {
        "uptime": ["mon 12:00-mon 13:00", "wed 12:00-wed 13:00"],
        "downtime": [],
    }


def test_downtime_closes_and_combines_with_uptime() -> None:
    office = Windows.parse(downtime="mon-fri 09:00-18:00")
    assert not office.is_open(at(2, 10))
    assert office.is_open(at(2, 20))
    assert office.is_open(at(6, 10))  # saturday
    assert office.next_change(at(5, 10)) == at(5, 18)
    assert office.next_change(at(5, 19)) == at(8, 9)  # the weekend stays open
    both = Windows.parse(uptime="sat-sun", downtime="sun 02:00-sun 04:00")
    assert both.is_open(at(6, 1))
    assert not both.is_open(at(7, 3))
    assert both.is_open(at(7, 5))
    assert not both.is_open(at(8, 0))
    assert both.next_change(at(7, 3)) == at(7, 4)
    assert both.next_change(at(7, 5)) == at(8, 0)


def test_no_windows_is_always_open() -> None:
    always = Windows.parse()
    assert always.always_open
    assert always.is_open(at(3, 3))
    assert always.next_change(at(3, 3)) is None
    assert always.describe(at(3, 3)) == "always open"
    full_week = Windows.parse("mon 00:00-mon 00:00")
    assert full_week.is_open(at(4, 4)) and full_week.next_change(at(4, 4)) is None
    assert always.closes_in(at(3, 3)) is None and full_week.closes_in(at(4, 4)) is None


def test_closes_in_counts_the_seconds_an_open_window_has_left() -> None:
    assert WEEKEND.closes_in(at(8, 5, 40, 30)) == 80 * 60 - 30  # monday 05:40:30, closes 07:00
    assert WEEKEND.closes_in(at(3, 12)) is None  # closed now


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("fri 19:00-mon 07:00", [Span(4 * 1440 + 19 * 60, 2 * 1440 + 12 * 60)]),
        ("sat 09:00-17:00", [Span(5 * 1440 + 9 * 60, 8 * 60)]),
        ("Friday 22:00 - 02:00", [Span(4 * 1440 + 22 * 60, 4 * 60)]),
        ("fri-mon 00:00-24:00", [Span(d * 1440, 1440) for d in (4, 5, 6, 0)]),
        ("sat-sun", [Span(5 * 1440, 2 * 1440)]),
        ("sun", [Span(6 * 1440, 1440)]),
        ("sat 00:00-sun 24:00", [Span(5 * 1440, 2 * 1440)]),
    ],
)
def test_window_forms(text: str, spans: list[Span]) -> None:
    assert parse_window(text) == spans


@pytest.mark.parametrize(
    "text",
    ["fri 19-mon 07", "fri 25:00-sat 01:00", "funday 10:00-12:00", "fr 10:00-12:00", "19:00", "x"],
)
def test_bad_windows_name_the_accepted_form(text: str) -> None:
    with pytest.raises(UsageError, match=r"use 'fri 19:00-mon 07:00', '19:00-07:00' \(daily\)"):
        Windows.parse(uptime=text)


def test_bad_downtime_names_its_flag() -> None:
    with pytest.raises(UsageError, match=r"^--downtime 'mon 24:00-tue 01:00': 24:00 is not a time"):
        Windows.parse(downtime="mon 24:00-tue 01:00")


def test_aware_datetimes_keep_their_zone() -> None:
    zone = timezone(timedelta(hours=2))
    now = datetime(2024, 1, 3, 12, 0, tzinfo=zone)
    assert WEEKEND.next_change(now) == datetime(2024, 1, 5, 19, 0, tzinfo=zone)


def test_system_clock_is_local_wall_time() -> None:
    now = SystemClock().now()
    assert now.tzinfo is None
    assert abs((now - datetime.now()).total_seconds()) < 3600


@given(
    start=st.integers(0, 7 * 1440 - 1),
    length=st.integers(1, 7 * 1440),
    offset=st.integers(0, 7 * 1440 * 60 - 1),
)
def test_next_change_is_the_first_flip(start: int, length: int, offset: int) -> None:
    windows = Windows(uptime=(Span(start, length),))
    now = datetime(2024, 1, 1) + timedelta(seconds=offset)
    change = windows.next_change(now)
    if length == 7 * 1440:
        assert change is None
        return
    assert change is not None and change > now
    assert windows.is_open(change) != windows.is_open(now)
    just_before = change - timedelta(minutes=1)
    if just_before > now:
        assert windows.is_open(just_before) == windows.is_open(now)


@pytest.mark.slow
def test_outside_its_windows_the_daemon_takes_nothing_new_and_running_tasks_go_on(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    clock = FakeClock(at(6, 12))  # Saturday noon: open
    flag = tmp_path / "flag"
    running = enqueue(agent_store, project, "--wait-for", str(flag), gpus=1, timeout=60.0)
    daemon = gpu_agent(
        redis_url,
        tmp_path / "agent",
        venv_cache,
        FakeInventory.with_gpus(2),
        clock=clock,
        uptime=("fri 19:00-mon 07:00",),
    )
    agent = Background(daemon)
    try:
        wait_for(lambda: "pid=" in log_text(agent_store, running.id), what="the task to start")
        clock.set(at(8, 8))  # Monday 08:00: closed until Friday evening
        later = enqueue(agent_store, project, gpus=1)
        workers = wait_output(redis_url, "windows: closed until fri 19:00", "workers")
        assert "paused" in workers
        assert running.id[:12] in workers  # still running
        flag.touch()
        assert wait_status(agent_store, running.id, TaskStatus.FINISHED).gpu_ids == ("0",)
        # Two GPUs free, heartbeats go on, and still nothing new is taken: the window is closed.
        registry = AgentRegistry(agent_store.redis)
        wait_for(lambda: registry.list()[0].tasks == (), what="the agent to publish no tasks")
        assert "paused" in cli_output(redis_url, "workers")
        assert agent_store.get(later.id).status is TaskStatus.QUEUED
        clock.set(at(12, 19, 30))  # Friday 19:30: open again
        wait_status(agent_store, later.id, TaskStatus.FINISHED)
        wait_output(redis_url, "windows: open until mon 07:00", "workers")
    finally:
        flag.touch()
        agent.stop()
