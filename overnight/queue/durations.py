"""Durations and points in time as users type them: ``8h``, ``90m``, ``1h30m``, ``30d``, ``2w``."""

from __future__ import annotations

import datetime as _dt
import re
import time

from overnight.errors import UsageError

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in ``text``: a number of seconds, or parts like ``1d12h``, ``90m``, ``2.5h``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or pos == 0:
            raise UsageError(
                f"invalid {what} {text!r}: use a number with a unit, like 45s, 90m, 8h, 1h30m, 30d"
            ) from None
    if seconds < 0:
        raise UsageError(f"invalid {what} {text!r}: it must not be negative")
    return seconds


def parse_since(text: str, *, now: float | None = None) -> float:
    """Unix time for ``--since``: a duration ago (``2d``) or an ISO date/time (``2024-05-01``)."""
    try:
        return (time.time() if now is None else now) - parse_duration(text, what="--since")
    except UsageError:
        pass
    try:
        moment = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"invalid --since {text!r}: use a duration ago (2d, 12h) or a date (2024-05-01)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as the user typed it
    return moment.timestamp()
