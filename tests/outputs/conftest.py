from __future__ import annotations

from tests.fixtures.sshd import sshd
from tests.fixtures.tasks import redis_client, store

__all__ = ["redis_client", "sshd", "store"]
