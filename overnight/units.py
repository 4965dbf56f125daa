"""Sizes and durations as overnight prints them: ``3.2 KB``, ``1h02m``, ``0.5s``."""

from __future__ import annotations

_SIZES = ("KB", "MB", "GB", "TB")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_bytes(size: float) -> str:
    """``512 B``, ``3.2 KB``, ``14.0 MB``, ``1.5 GB``."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in _SIZES:
        size /= 1024
        if size < 1024 or unit == _SIZES[-1]:
            break
    return f"{size:.1f} {unit}"


def format_duration(seconds: float | None) -> str:
    """At most two units, the second zero-padded and left out when zero: ``3d4h``, ``8h``,
    ``1h02m``, ``4m05s``, ``12s``; tenths under 10 s (``0.5s``); empty for None."""
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 10 and seconds != int(seconds):
        tenths = f"{seconds:.1f}".rstrip("0").rstrip(".")
        return f"{tenths}s"
    total = round(seconds)
    for index, (unit, size) in enumerate(_UNITS):
        if total >= size or unit == "s":
            first, rest = divmod(total, size)
            text = f"{first}{unit}"
            if unit != "s":
                small, small_size = _UNITS[index + 1]
                second = rest // small_size
                if second:
                    text += f"{second}{small}" if unit == "d" else f"{second:02d}{small}"
            return text
    raise AssertionError("unreachable")  # pragma: no cover
