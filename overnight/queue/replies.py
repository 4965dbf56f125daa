"""redis-py's replies are loosely typed (bytes, str or more); these helpers pin them down."""

from __future__ import annotations

from typing import Any

from redis.client import Pipeline


def text(value: Any) -> str:
    """A reply item as str (this package's clients return bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def raw(value: Any) -> bytes | None:
    """A GET-style reply as bytes, or None for a missing key."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def texts(values: Any) -> list[str]:
    return [text(v) for v in values]


def watch(pipe: Pipeline, *names: str) -> None:
    """WATCH keys on a pipeline (redis-py leaves this method untyped)."""
    pipe.watch(*names)  # type: ignore[no-untyped-call]
