from __future__ import annotations

import pytest

from overnight.errors import UsageError
from overnight.queue.durations import parse_duration, parse_since


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45", 45),
        ("45s", 45),
        ("90m", 5400),
        ("8h", 28800),
        ("1h30m", 5400),
        ("30d", 2592000),
        ("2w", 1209600),
        ("2.5h", 9000),
        (" 1D ", 86400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "8x", "1h30", "-5", "ten minutes", "1h-2m"])
def test_bad_durations_name_the_fix(text: str) -> None:
    with pytest.raises(UsageError, match="invalid"):
        parse_duration(text)


def test_parse_since() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("2024-05-01T00:00:00+00:00") == 1714521600.0
    with pytest.raises(UsageError, match="--since"):
        parse_since("last tuesday")
