"""Which output store a setting names: :func:`open_store`, the one place that picks one."""

from __future__ import annotations

import redis

from overnight.errors import ConfigError
from overnight.outputs.redisstore import RedisOutputStore
from overnight.outputs.store import OutputStore


def open_store(url: str | None, redis: redis.Redis) -> OutputStore:
    """The store the ``output_store`` setting names: Redis itself when unset or ``redis``."""
    if url is None or url in ("", "redis"):
        return RedisOutputStore(redis)
    raise ConfigError(
        f"output_store {url!r} is not a store this overnight knows; leave it unset (Redis) "
        "or set it to redis"
    )
