from __future__ import annotations

from tests.fixtures.redis_urls import secured_redis
from tests.fixtures.studies import lab
from tests.fixtures.tasks import cli_env, redis_client, store
from tests.fixtures.uiserver import ui_server

__all__ = ["cli_env", "lab", "redis_client", "secured_redis", "store", "ui_server"]
