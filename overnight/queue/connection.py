"""Connecting to Redis: one place that turns a URL into a checked client or a clear error."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from overnight.errors import ConnectionFailed


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``), checked with a PING.

    The client returns bytes (RQ needs that). Raises :class:`ConnectionFailed` naming the URL
    without its password.
    """
    shown = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        raise ConnectionFailed(
            f"invalid Redis URL {shown}: {exc}; use redis://[user:password@]host:port/db, "
            "rediss://... or unix:///path/to/socket"
        ) from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        reason = str(exc).replace(url, shown).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConnectionFailed(
            f"cannot reach Redis at {shown}: {reason}; start Redis or pass --redis-url "
            "(or set OVERNIGHT_REDIS_URL)"
        ) from exc
    return client
