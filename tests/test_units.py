"""units.py: the one way sizes and durations are printed."""

from __future__ import annotations

import pytest

from overnight.units import format_bytes, format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (0, "0s"),
        (0.5, "0.5s"),
        (3.42, "3.4s"),
        (12, "12s"),
        (12.4, "12s"),
        (120, "2m00s"),
        (125, "2m05s"),
        (3720, "1h02m"),
        (5400, "1h30m"),
        (8 * 3600, "8h00m"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (90061, "1d1h"),
        (3 * 86400, "3d0h"),
        (-3, "0s"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (512, "512 B"), (3277, "3.2 KB"), (14 * 2**20, "14.0 MB"), (3 * 2**29, "1.5 GB")],
)
def test_sizes(size: int, text: str) -> None:
    assert format_bytes(size) == text
