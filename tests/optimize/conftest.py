from __future__ import annotations

from tests.fixtures.studies import lab
from tests.fixtures.tasks import redis_client, store

__all__ = ["lab", "redis_client", "store"]
