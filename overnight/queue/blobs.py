"""Content-addressed storage of specs and blobs, each stored once and reference-counted.

A spec is stored under the sha256 of its JSON, a blob (patch, bundle) under the sha256 of its
bytes. The tasks of a sweep, a retry and a clone share one spec and its blobs. ``REFS`` counts the
tasks using each spec and the specs using each blob, so :mod:`overnight.queue.gc` can delete what
nothing uses any more. The counting happens in Lua, so it is atomic with the writes it describes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.client import Pipeline

from overnight.errors import CorruptRecord
from overnight.queue import keys, replies

# KEYS: spec key, refs hash, blob keys...   ARGV: spec id, spec json, task count, blob shas...
# Stores the spec (once), counts the tasks using it, and counts the spec on each blob when the
# spec is new. Returns the shas of blobs that are missing (then nothing was written).
_ADD_SPEC = """
local missing = {}
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then table.insert(missing, ARGV[i + 1]) end
end
if #missing > 0 then return missing end
if redis.call('SET', KEYS[1], ARGV[2], 'NX') then
  for i = 4, #ARGV do redis.call('HINCRBY', KEYS[2], 'b:' .. ARGV[i], 1) end
end
redis.call('HINCRBY', KEYS[2], 's:' .. ARGV[1], tonumber(ARGV[3]))
return missing
"""

# KEYS: spec key, refs hash, blob keys...   ARGV: spec id, task count, blob shas...
# Drops task references to a spec; a spec no task uses is deleted and releases its blobs.
# Returns the number of keys deleted.
_RELEASE_SPEC = """
local left = redis.call('HINCRBY', KEYS[2], 's:' .. ARGV[1], -tonumber(ARGV[2]))
if left > 0 then return 0 end
redis.call('HDEL', KEYS[2], 's:' .. ARGV[1])
local deleted = redis.call('DEL', KEYS[1])
for i = 3, #KEYS do
  local field = 'b:' .. ARGV[i]
  if redis.call('HINCRBY', KEYS[2], field, -1) <= 0 then
    redis.call('HDEL', KEYS[2], field)
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
return deleted
"""


def _check(blobs: Mapping[str, bytes]) -> None:
    for sha, data in blobs.items():
        if hashlib.sha256(data).hexdigest() != sha:
            raise CorruptRecord(f"blob {sha[:12]} does not match its sha256; refusing to store it")


def spec_id_of(spec_json: str) -> str:
    return hashlib.sha256(spec_json.encode("utf-8")).hexdigest()


class BlobStore:
    """Specs and blobs in Redis, keyed by their sha256."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client
        self._add_spec = redis_client.register_script(_ADD_SPEC)
        self._release_spec = redis_client.register_script(_RELEASE_SPEC)

    def put_blobs(self, blobs: Mapping[str, bytes], *, skip_existing: bool = True) -> None:
        """Store blobs that are not in Redis yet; the bytes of a present blob are never resent."""
        shas = list(blobs)
        if not shas:
            return
        _check(blobs)
        present = [False] * len(shas)
        if skip_existing:
            pipe = self._redis.pipeline(transaction=False)
            for sha in shas:
                pipe.exists(keys.blob(sha))
            present = [bool(n) for n in pipe.execute()]
        pipe = self._redis.pipeline(transaction=False)
        for sha, there in zip(shas, present, strict=True):
            if not there:
                pipe.set(keys.blob(sha), blobs[sha], nx=True)
        pipe.execute()

    @staticmethod
    def queue_blobs(pipe: Pipeline, blobs: Mapping[str, bytes]) -> None:
        """Queue, on ``pipe``, the writes of the blobs Redis lacks (their bytes are sent)."""
        _check(blobs)
        for sha, data in blobs.items():
            pipe.set(keys.blob(sha), data, nx=True)

    def add_spec(
        self,
        spec_id: str,
        spec_json: str,
        blob_shas: Sequence[str],
        tasks: int,
        *,
        pipe: Pipeline | None = None,
    ) -> list[str]:
        """Store a spec used by ``tasks`` more tasks; returns the shas of missing blobs.

        With ``pipe`` (a transaction) the call is queued and returns ``[]``; its result in the
        transaction's replies goes through :meth:`missing_from`. When blobs are missing nothing
        is written.
        """
        script_keys = [keys.spec(spec_id), keys.REFS, *(keys.blob(s) for s in blob_shas)]
        args: list[str | int] = [spec_id, spec_json, tasks, *blob_shas]
        if pipe is not None:
            # EVAL, not the registered script's EVALSHA: a pipeline holding one asks Redis
            # whether the script is loaded first, a round trip of its own.
            pipe.eval(_ADD_SPEC, len(script_keys), *script_keys, *args)
            return []
        return self.missing_from(self._add_spec(keys=script_keys, args=args))

    @staticmethod
    def missing_from(result: Any) -> list[str]:
        """The missing blob shas reported by one :meth:`add_spec` result."""
        return [s.decode() if isinstance(s, bytes) else str(s) for s in (result or [])]

    def release_spec(self, spec_id: str, blob_shas: Sequence[str], tasks: int = 1) -> int:
        """Drop ``tasks`` references to a spec; returns how many keys were deleted."""
        deleted = self._release_spec(
            keys=[keys.spec(spec_id), keys.REFS, *(keys.blob(s) for s in blob_shas)],
            args=[spec_id, tasks, *blob_shas],
        )
        return int(deleted)

    def spec_json(self, spec_id: str) -> bytes:
        raw = replies.raw(self._redis.get(keys.spec(spec_id)))
        if raw is None:
            raise CorruptRecord(
                f"spec {spec_id[:12]} is missing from Redis (removed by hand or by gc); "
                "enqueue the task again"
            )
        return raw

    def get_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """The blobs with these shas, each checked against its sha256."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        values = self._redis.mget([keys.blob(s) for s in wanted])
        out: dict[str, bytes] = {}
        for sha, value in zip(wanted, values, strict=True):
            data = replies.raw(value)
            if data is None:
                raise CorruptRecord(
                    f"blob {sha[:12]} is missing from Redis (removed by hand or by gc); "
                    "enqueue the task again"
                )
            if hashlib.sha256(data).hexdigest() != sha:
                raise CorruptRecord(f"blob {sha[:12]} in Redis does not match its sha256")
            out[sha] = data
        return out

    def refs(self, spec_id: str) -> int:
        value = self._redis.hget(keys.REFS, f"s:{spec_id}")
        return int(value) if value is not None else 0

    def blob_refs(self, sha: str) -> int:
        value = self._redis.hget(keys.REFS, f"b:{sha}")
        return int(value) if value is not None else 0
