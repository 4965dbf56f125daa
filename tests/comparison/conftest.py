from __future__ import annotations

from tests.fixtures.tasks import redis_client, store

__all__ = ["redis_client", "store"]
