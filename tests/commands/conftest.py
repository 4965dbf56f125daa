from __future__ import annotations

from tests.fixtures.tasks import cli_env, redis_client, store

__all__ = ["cli_env", "redis_client", "store"]
