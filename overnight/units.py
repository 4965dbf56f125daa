"""Sizes and durations as overnight prints them: ``3.2 KB``, ``1h02m``, ``0.5s``."""

from __future__ import annotations

_SIZES = ("KB", "MB", "GB", "TB")


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
    """Two units, the second zero-padded, so a column of them lines up: ``3d4h``, ``8h00m``,
    ``4m05s``, ``12s``; tenths under 10 s (``0.5s``); empty for None."""
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    days, rest = divmod(round(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
