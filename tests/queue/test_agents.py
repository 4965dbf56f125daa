from __future__ import annotations

import time

import pytest
import redis

from overnight.errors import CorruptRecord
from overnight.queue import keys
from overnight.queue.agents import AgentInfo, AgentRegistry


def _info(name: str, **kw: object) -> AgentInfo:
    return AgentInfo(name=name, host="box", queues=("gpu",), **kw)  # type: ignore[arg-type]


def test_register_list_and_expire(redis_client: redis.Redis) -> None:
    agents = AgentRegistry(redis_client)
    agents.register(_info("b", gpus=("0", "1"), tasks=("t1",), state="busy", extra={"gpu0": "ok"}))
    agents.register(_info("a"), ttl=0.05)
    listed = agents.list()
    assert [a.name for a in listed] == ["a", "b"]
    assert listed[1].gpus == ("0", "1") and listed[1].extra == {"gpu0": "ok"}
    assert listed[1].heartbeat > time.time() - 5
    time.sleep(0.1)
    assert [a.name for a in agents.list()] == ["b"]
    agents.remove("b")
    assert agents.list() == []


def test_corrupt_agent_records(redis_client: redis.Redis) -> None:
    with pytest.raises(CorruptRecord):
        AgentInfo.from_json(b"[1]")
    agents = AgentRegistry(redis_client)
    agents.register(_info("a"))
    redis_client.set(keys.agent("a"), b"{")
    assert agents.list() == []


def test_state_is_checked(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="idle"):
        AgentRegistry(redis_client).register(_info("a", state="sleeping"))
