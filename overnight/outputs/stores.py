"""Which output store a setting names: :func:`open_store`, the one place that picks one."""

from __future__ import annotations

import redis

from overnight.outputs.fsstore import open_fsspec_store
from overnight.outputs.locations import REDIS, check_output_store
from overnight.outputs.redisstore import RedisOutputStore
from overnight.outputs.store import OutputStore


def open_store(url: str | None, redis: redis.Redis) -> OutputStore:
    """The store the ``output_store`` setting names: Redis itself when unset or ``redis``, else
    the fsspec store at that URL (``file://``, ``sftp://``, ``s3://``); a URL of another kind is
    a :class:`ConfigError` naming the setting."""
    if url is None or url in ("", REDIS):
        return RedisOutputStore(redis)
    check_output_store(url)
    return open_fsspec_store(url)
