"""When an agent takes new tasks: weekly uptime and downtime windows in the agent's local time.

``Windows.parse(uptime=["fri 19:00-mon 07:00"], downtime=[])`` reads ``--uptime``/``--downtime``
values (each may hold several windows separated by commas; the flags may repeat). The daemon asks
``is_open(clock.now())`` before taking a task (running tasks go on regardless) and shows
``describe(now)`` ("open until mon 07:00") in its registry entry; ``next_change(now)`` says when to
look again (None: never changes). The agent is open inside any uptime window (always, when there
are none) and outside every downtime window. Times are wall-clock times of ``now``: pass naive
local datetimes (:class:`SystemClock` does) or aware ones in the agent's zone.

Forms of one window (days ``mon``..``sun``, full names too; times ``HH:MM``, ``24:00`` as an end):

- ``fri 19:00-mon 07:00``: from a day and time to a day and time, across the week's end if need be;
- ``19:00-07:00``: every day (ending the next morning when the end is earlier than the start);
- ``sat 09:00-17:00`` or ``mon-fri 19:00-07:00``: those days only;
- ``sat-sun`` or ``sun``: whole days.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from overnight.errors import UsageError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_MIN = 24 * 60
WEEK_MIN = 7 * DAY_MIN
ACCEPTED = (
    "use 'fri 19:00-mon 07:00', '19:00-07:00' (daily), 'mon-fri 19:00-07:00' or 'sat-sun', "
    "several separated by commas"
)

_TIME = r"\d{1,2}:\d{2}"
_WORD = r"[a-z]+"
_DAY_TO_DAY = re.compile(
    rf"(?P<d1>{_WORD})\s+(?P<t1>{_TIME})\s*-\s*(?P<d2>{_WORD})\s+(?P<t2>{_TIME})"
)
_DAYS_TIMES = re.compile(
    rf"(?:(?P<d1>{_WORD})(?:\s*-\s*(?P<d2>{_WORD}))?\s+)?(?P<t1>{_TIME})\s*-\s*(?P<t2>{_TIME})"
)
_WHOLE_DAYS = re.compile(rf"(?P<d1>{_WORD})(?:\s*-\s*(?P<d2>{_WORD}))?")


class Clock(Protocol):
    """Where the daemon reads the time from; tests pass a :class:`FakeClock`."""

    def now(self) -> datetime: ...


class SystemClock:
    """The machine's local wall-clock time (naive)."""

    def now(self) -> datetime:
        return datetime.now()


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**parts)``; returns the new time."""
        self._now += delta if delta is not None else timedelta(**parts)
        return self._now


@dataclasses.dataclass(frozen=True)
class Span:
    """``length`` minutes from minute ``start`` of the week (Monday 00:00 is 0)."""

    start: int
    length: int

    def contains(self, minute: int) -> bool:
        return (minute - self.start) % WEEK_MIN < self.length

    @property
    def edges(self) -> tuple[int, int]:
        return self.start, (self.start + self.length) % WEEK_MIN


@dataclasses.dataclass(frozen=True)
class Windows:
    """Uptime and downtime windows; no windows at all means always open."""

    uptime: tuple[Span, ...] = ()
    downtime: tuple[Span, ...] = ()
    uptime_text: tuple[str, ...] = ()  # the windows as given, for display
    downtime_text: tuple[str, ...] = ()

    @classmethod
    def parse(cls, uptime: str | Sequence[str] = (), downtime: str | Sequence[str] = ()) -> Windows:
        """Read ``--uptime`` and ``--downtime`` values; raises :class:`UsageError` on bad syntax."""
        up = _items(uptime)
        down = _items(downtime)
        return cls(
            uptime=tuple(s for item in up for s in parse_window(item, "--uptime")),
            downtime=tuple(s for item in down for s in parse_window(item, "--downtime")),
            uptime_text=up,
            downtime_text=down,
        )

    @property
    def always_open(self) -> bool:
        return not self.uptime and not self.downtime

    def _open_at(self, minute: int) -> bool:
        if self.uptime and not any(s.contains(minute) for s in self.uptime):
            return False
        return not any(s.contains(minute) for s in self.downtime)

    def is_open(self, now: datetime) -> bool:
        """Whether the agent may take a new task at ``now``."""
        return self._open_at(_minute_of_week(now))

    def next_change(self, now: datetime) -> datetime | None:
        """The first moment after ``now`` at which :meth:`is_open` flips; None if it never does."""
        minute = _minute_of_week(now)
        current = self._open_at(minute)
        edges = {e for s in (*self.uptime, *self.downtime) for e in s.edges}
        ahead = sorted((e - minute) % WEEK_MIN or WEEK_MIN for e in edges)
        for delta in ahead:
            if self._open_at((minute + delta) % WEEK_MIN) != current:
                return now.replace(second=0, microsecond=0) + timedelta(minutes=delta)
        return None

    def closes_in(self, now: datetime) -> float | None:
        """Seconds until an open window closes; None when closed now or never closing."""
        if not self.is_open(now):
            return None
        change = self.next_change(now)
        return None if change is None else max(0.0, (change - now).total_seconds())

    def describe(self, now: datetime) -> str:
        """One line for ``overnight workers``: "open until mon 07:00", "closed until fri 19:00"."""
        state = "open" if self.is_open(now) else "closed"
        change = self.next_change(now)
        if change is None:
            return f"always {state}"
        return f"{state} until {DAYS[change.weekday()]} {change:%H:%M}"

    def to_dict(self) -> dict[str, Any]:
        """The windows as given, for the agent's registry entry."""
        return {"uptime": list(self.uptime_text), "downtime": list(self.downtime_text)}


def _items(values: str | Iterable[str]) -> tuple[str, ...]:
    chunks = [values] if isinstance(values, str) else list(values)
    return tuple(item.strip() for chunk in chunks for item in chunk.split(",") if item.strip())


def parse_window(text: str, flag: str = "--uptime") -> list[Span]:
    """The spans one window such as ``fri 19:00-mon 07:00`` covers in a week."""
    item = " ".join(text.lower().split())
    try:
        if m := _DAY_TO_DAY.fullmatch(item):
            start = _day(m["d1"]) * DAY_MIN + _time(m["t1"])
            end = _day(m["d2"]) * DAY_MIN + _time(m["t2"], end=True)
            return [Span(start % WEEK_MIN, (end - start) % WEEK_MIN or WEEK_MIN)]
        if m := _DAYS_TIMES.fullmatch(item):
            t1, t2 = _time(m["t1"]), _time(m["t2"], end=True)
            length = (t2 - t1) % DAY_MIN or DAY_MIN
            days = _day_range(m["d1"], m["d2"]) if m["d1"] else list(range(7))
            return [Span(d * DAY_MIN + t1, length) for d in days]
        if m := _WHOLE_DAYS.fullmatch(item):
            days = _day_range(m["d1"], m["d2"])
            return [Span(days[0] * DAY_MIN, len(days) * DAY_MIN)]
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}; {ACCEPTED}") from None
    raise UsageError(f"{flag} {text!r} is not understood; {ACCEPTED}")


def _day(word: str) -> int:
    if len(word) >= 3:
        for index, name in enumerate(_FULL):
            if name.startswith(word):
                return index
    raise ValueError(f"{word!r} is not a day (mon..sun)")


def _day_range(first: str, last: str | None) -> list[int]:
    a = _day(first)
    b = a if last is None else _day(last)
    return [(a + i) % 7 for i in range((b - a) % 7 + 1)]


def _time(text: str, *, end: bool = False) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if (hours, minutes) == (24, 0) and end:
        return DAY_MIN
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text} is not a time of day (00:00..23:59)")
    return hours * 60 + minutes


def _minute_of_week(when: datetime) -> int:
    return when.weekday() * DAY_MIN + when.hour * 60 + when.minute
