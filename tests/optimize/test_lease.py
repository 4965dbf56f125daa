from __future__ import annotations

import time

import pytest
import redis

from overnight.optimize.lease import DriverLease


@pytest.mark.slow
def test_one_driver_at_a_time_and_a_lost_lease_is_taken_over(redis_client: redis.Redis) -> None:
    first = DriverLease(redis_client, "s", owner="laptop", ttl=0.3)
    second = DriverLease(redis_client, "s", owner="agent-1", ttl=0.3)
    assert first.take() and first.take()  # renewed
    assert not second.take() and second.holder() == "laptop"
    time.sleep(0.45)  # the laptop closed: no renewal
    assert second.take() and second.holder() == "agent-1"
    assert not first.take()
    first.release()  # not its lease any more: nothing happens
    assert second.holder() == "agent-1"
    second.release()
    assert second.holder() is None and first.take()
