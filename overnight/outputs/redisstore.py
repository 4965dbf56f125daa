"""The default output store: blobs kept in Redis itself, as lists of :data:`CHUNK`-byte parts.

A blob is written under a temporary key and renamed into place once its bytes hashed to its
digest, so a reader only ever sees complete blobs; a writer that dies leaves a temporary key that
expires. Which tasks use a blob is the manifest's business (:mod:`overnight.outputs.manifest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TypeVar

import redis

from overnight.errors import OutputChanged, OutputError, OutputStoreDown
from overnight.outputs.store import CHUNK, OutputStore
from overnight.queue import keys, replies

T = TypeVar("T")

PARTIAL_TTL = 3600
"""Seconds a half-written blob's temporary key lives (its writer died before renaming it)."""


def blob_key(digest: str) -> str:
    return f"{keys.PREFIX}outblob:{digest}"


class RedisOutputStore(OutputStore):
    """Blobs as Redis lists of chunks: never a whole file in memory, on either side."""

    url = "redis"

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def exists(self, digest: str) -> bool:
        return bool(self._call(lambda: self.redis.exists(blob_key(digest))))

    def write(self, digest: str, chunks: Iterable[bytes]) -> None:
        temporary = f"{blob_key(digest)}:partial:{uuid.uuid4().hex}"
        sha = hashlib.sha256()
        try:
            for chunk in _rechunked(chunks):
                sha.update(chunk)
                pipe = self.redis.pipeline(transaction=False)
                pipe.rpush(temporary, chunk)
                pipe.expire(temporary, PARTIAL_TTL)
                pipe.execute()
            if sha.hexdigest() != digest:
                raise OutputChanged(
                    f"the file changed while it was stored (its bytes hash to "
                    f"{sha.hexdigest()[:12]}, not {digest[:12]}); it is stored at the next sync"
                )
            pipe = self.redis.pipeline(transaction=True)
            if sha.digest() == hashlib.sha256(b"").digest():
                pipe.rpush(temporary, b"")  # an empty file is one empty part: the key must exist
            pipe.rename(temporary, blob_key(digest))
            pipe.persist(blob_key(digest))
            pipe.execute()
        except redis.RedisError as exc:
            self._forget(temporary)
            raise _failure(exc, "cannot store a blob in Redis") from exc
        except BaseException:
            self._forget(temporary)
            raise

    def read(self, digest: str) -> Iterator[bytes]:
        key = blob_key(digest)
        parts = int(self._call(lambda: self.redis.llen(key)))
        if parts == 0:
            raise OutputError(
                f"blob {digest[:12]} is not in the Redis output store (removed by gc?); "
                "the task's manifest names a file whose bytes are gone"
            )
        for index in range(parts):
            chunk = replies.raw(self._call(partial(self.redis.lindex, key, index)))
            if chunk is None:
                raise OutputError(f"blob {digest[:12]} was removed while it was read; pull again")
            yield chunk

    def delete(self, digest: str) -> None:
        self._call(lambda: self.redis.delete(blob_key(digest)))

    def _forget(self, temporary: str) -> None:
        with contextlib.suppress(redis.RedisError):  # else it expires
            self.redis.delete(temporary)

    @staticmethod
    def _call(call: Callable[[], T]) -> T:
        try:
            return call()
        except redis.RedisError as exc:
            raise _failure(exc, "the Redis output store failed") from exc


def _failure(exc: redis.RedisError, what: str) -> OutputError:
    """Down (no connection) or refusing (out of memory, read-only): one line naming it."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return OutputStoreDown(f"{what}: {exc}; check that the Redis server is up")
    if "maxmemory" in str(exc):
        return OutputError(
            f"{what}: Redis is out of memory (its maxmemory reached); set output_store to a "
            "file:// or sftp:// store for large outputs, or give Redis more memory"
        )
    return OutputError(f"{what}: {exc}; check the Redis server")


def _rechunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The bytes of ``chunks`` again, in parts of at most :data:`CHUNK` bytes."""
    for chunk in chunks:
        for start in range(0, len(chunk), CHUNK):
            yield chunk[start : start + CHUNK]
