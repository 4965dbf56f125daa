"""The digest's schedule: slots in the agent's local time, due for an hour after each."""

from __future__ import annotations

from datetime import datetime

import pytest

from overnight.errors import DigestScheduleError
from overnight.notify.schedule import DigestSchedule, Slot

MONDAY_7 = datetime(2026, 12, 7, 7, 0)  # a Monday


def test_slots_are_read_weekly_and_daily() -> None:
    schedule = DigestSchedule.parse(["mon 07:00", "friday 18:30, 06:15"])
    assert schedule.slots == (Slot(0, 7, 0), Slot(4, 18, 30), Slot(None, 6, 15))


@pytest.mark.parametrize("text", ["mon", "07:61", "25:00", "noday 07:00", "mon 7"])
def test_what_is_no_slot_is_refused(text: str) -> None:
    with pytest.raises(DigestScheduleError, match="mon 07:00"):
        DigestSchedule.parse([text])


def test_a_weekly_slot_is_due_for_an_hour_after_its_time() -> None:
    schedule = DigestSchedule.parse(["mon 07:00"])
    assert schedule.due(datetime(2026, 12, 7, 6, 59, 59)) is None
    assert schedule.due(MONDAY_7) == MONDAY_7
    assert schedule.due(datetime(2026, 12, 7, 7, 59)) == MONDAY_7
    assert schedule.due(datetime(2026, 12, 7, 8, 0)) is None
    assert schedule.latest(datetime(2026, 12, 10, 12, 0)) == MONDAY_7


def test_the_table_starts_at_the_slot_before() -> None:
    weekly = DigestSchedule.parse(["mon 07:00"])
    assert weekly.before(MONDAY_7) == datetime(2026, 11, 30, 7, 0)
    both = DigestSchedule.parse(["mon 07:00,fri 18:00"])
    assert both.before(MONDAY_7) == datetime(2026, 12, 4, 18, 0)
    daily = DigestSchedule.parse(["07:00"])
    assert daily.before(MONDAY_7) == datetime(2026, 12, 6, 7, 0)
