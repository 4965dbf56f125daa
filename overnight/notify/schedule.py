"""When the digest is due: ``digest`` values such as ``mon 07:00`` (weekly) or ``07:00`` (daily),
in the agent's local time (several: ``mon 07:00,thu 07:00``).

:meth:`DigestSchedule.latest` is the last slot at or before a moment; an agent sends the digest
of a slot it sees within :data:`LATE` of it (after a claim in Redis, so one agent does), covering
the tasks since the slot before.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from overnight.errors import DigestScheduleError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LATE = timedelta(hours=1)
"""How long after its time a slot is still sent: an agent that was down longer skips it."""
_SLOT = re.compile(r"^(?:(?P<day>[a-z]+)\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})$")


@dataclasses.dataclass(frozen=True)
class Slot:
    """One scheduled time: a weekday (0 = Monday; None: every day) and a time of day."""

    weekday: int | None
    hour: int
    minute: int


@dataclasses.dataclass(frozen=True)
class DigestSchedule:
    """The digest's slots; empty: no digest."""

    slots: tuple[Slot, ...] = ()

    @classmethod
    def parse(cls, values: Iterable[str]) -> DigestSchedule:
        """``["mon 07:00", "fri 18:00,07:30"]`` -> a schedule; raises DigestScheduleError."""
        slots = []
        for value in values:
            for part in (p.strip().lower() for p in value.split(",")):
                if part:
                    slots.append(_slot(part))
        return cls(tuple(slots))

    def latest(self, now: datetime) -> datetime | None:
        """The last slot time at or before ``now`` (None without slots)."""
        times = [t for slot in self.slots for t in _times(slot, now) if t <= now]
        return max(times, default=None)

    def before(self, when: datetime) -> datetime:
        """The slot time before ``when`` (a slot time): where its digest's table starts."""
        earlier = when - timedelta(seconds=1)
        times = [t for slot in self.slots for t in _times(slot, earlier) if t <= earlier]
        return max(times, default=when - timedelta(days=7))

    def due(self, now: datetime) -> datetime | None:
        """The slot to send now: the latest one, if it passed less than :data:`LATE` ago."""
        slot = self.latest(now)
        return slot if slot is not None and now - slot < LATE else None


def _slot(text: str) -> Slot:
    match = _SLOT.match(text)
    day = match.group("day") if match else None
    weekday = None
    if match and day is not None:
        weekday = next((i for i, name in enumerate(DAYS) if day.startswith(name)), None)
    if (
        match is None
        or (day is not None and weekday is None)
        or int(match.group("hour")) > 23
        or int(match.group("minute")) > 59
    ):
        raise DigestScheduleError(
            f"digest {text!r} is not a day and a time; use 'mon 07:00' (weekly) or '07:00' "
            "(daily), several separated by commas"
        )
    return Slot(weekday, int(match.group("hour")), int(match.group("minute")))


def _times(slot: Slot, around: datetime) -> list[datetime]:
    """The slot's times in the week up to ``around`` (and a day after it)."""
    out = []
    for back in range(8):
        day = (around - timedelta(days=back)).replace(
            hour=slot.hour, minute=slot.minute, second=0, microsecond=0
        )
        if slot.weekday is None or day.weekday() == slot.weekday:
            out.append(day)
    return out
