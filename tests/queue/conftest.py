from __future__ import annotations

from tests.fixtures.redis_urls import secured_redis
from tests.fixtures.tasks import redis_client, store

__all__ = ["redis_client", "secured_redis", "store"]
