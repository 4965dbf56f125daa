"""The Redis output store against a real Redis: chunked blobs, visible only once complete."""

from __future__ import annotations

import hashlib

import pytest
import redis

from overnight.errors import ConfigError, OutputError
from overnight.outputs.redisstore import RedisOutputStore, blob_key
from overnight.outputs.store import CHUNK
from overnight.outputs.stores import open_store


def test_a_blob_larger_than_a_chunk_is_stored_in_parts_and_read_back(
    redis_client: redis.Redis,
) -> None:
    data = bytes(range(256)) * (CHUNK // 256 * 2 + 7)  # two chunks and a bit
    digest = hashlib.sha256(data).hexdigest()
    store = RedisOutputStore(redis_client)
    assert not store.exists(digest)
    store.write(digest, [data[:1000], data[1000:]])
    assert store.exists(digest)
    assert redis_client.llen(blob_key(digest)) >= 3
    assert all(len(part) <= CHUNK for part in redis_client.lrange(blob_key(digest), 0, -1))
    assert b"".join(store.read(digest)) == data


def test_an_empty_file_is_a_blob_too(redis_client: redis.Redis) -> None:
    digest = hashlib.sha256(b"").hexdigest()
    store = RedisOutputStore(redis_client)
    store.write(digest, [])
    assert store.exists(digest)
    assert b"".join(store.read(digest)) == b""


def test_bytes_that_do_not_hash_to_the_digest_leave_nothing(redis_client: redis.Redis) -> None:
    store = RedisOutputStore(redis_client)
    digest = hashlib.sha256(b"what the file held when hashed").hexdigest()
    with pytest.raises(OutputError, match="changed while it was stored"):
        store.write(digest, [b"what it holds now"])
    assert not store.exists(digest)
    assert redis_client.keys("overnight:outblob:*") == []


def test_a_missing_blob_is_an_output_error_and_delete_is_idempotent(
    redis_client: redis.Redis,
) -> None:
    store = RedisOutputStore(redis_client)
    digest = "0" * 64
    with pytest.raises(OutputError, match="not in the Redis output store"):
        b"".join(store.read(digest))
    store.delete(digest)


def test_open_store_gives_redis_by_default_and_refuses_unknown_urls(
    redis_client: redis.Redis,
) -> None:
    assert isinstance(open_store(None, redis_client), RedisOutputStore)
    assert isinstance(open_store("redis", redis_client), RedisOutputStore)
    with pytest.raises(ConfigError, match="output_store"):
        open_store("ftp://nowhere/x", redis_client)
