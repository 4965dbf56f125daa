"""One driver per study: a lease in Redis (the driver's id, with a TTL) that its holder renews.

A driver that stops renewing (a laptop closed, an agent killed) loses the lease when it expires,
and the next driver to ask takes it over; the in-flight trials are found again from their tasks.
"""

from __future__ import annotations

import uuid

import redis

from overnight.queue import keys

LEASE_TTL = 30.0
"""Seconds a lease outlives its last renewal."""

# Take the lease when it is free or already ours, and (re)set its TTL; else say who has it.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DriverLease:
    """The right to drive study ``name``, held by ``owner`` (a new id by default)."""

    def __init__(
        self, client: redis.Redis, name: str, *, owner: str | None = None, ttl: float = LEASE_TTL
    ) -> None:
        self.client = client
        self.name = name
        self.owner = owner or f"driver-{uuid.uuid4().hex[:12]}"
        self.ttl = ttl

    def take(self) -> bool:
        """Take or renew the lease; False while another driver holds it."""
        ms = max(1, int(self.ttl * 1000))
        return bool(self.client.eval(_TAKE, 1, keys.study_lease(self.name), self.owner, ms))

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        self.client.eval(_RELEASE, 1, keys.study_lease(self.name), self.owner)

    def holder(self) -> str | None:
        value = self.client.get(keys.study_lease(self.name))
        return value.decode(errors="replace") if isinstance(value, bytes) else value
