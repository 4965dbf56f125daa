"""Agents as Redis sees them: who serves which queues, with which GPUs, doing what.

Each agent keeps a JSON description under ``overnight:agent:<name>`` with a TTL and renews it
with every heartbeat; an agent that stops renewing drops out of :meth:`AgentRegistry.list`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from overnight.errors import CorruptRecord
from overnight.queue import keys, replies

AGENT_STATES = ("idle", "busy", "draining", "paused")


@dataclasses.dataclass(frozen=True)
class AgentInfo:
    """What ``overnight workers`` shows about one agent."""

    name: str
    host: str
    queues: tuple[str, ...]
    gpus: tuple[str, ...] = ()
    env_mode: str = "venv"
    state: str = "idle"  # one of AGENT_STATES
    tasks: tuple[str, ...] = ()
    heartbeat: float = 0.0  # unix time of the last heartbeat
    pid: int = 0
    started: float = 0.0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # GPU notes, windows, hardware

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentInfo:
        try:
            return cls(
                name=str(data["name"]),
                host=str(data.get("host", "")),
                queues=tuple(str(q) for q in data.get("queues", ())),
                gpus=tuple(str(g) for g in data.get("gpus", ())),
                env_mode=str(data.get("env_mode", "venv")),
                state=str(data.get("state", "idle")),
                tasks=tuple(str(t) for t in data.get("tasks", ())),
                heartbeat=float(data.get("heartbeat", 0.0)),
                pid=int(data.get("pid", 0)),
                started=float(data.get("started", 0.0)),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRecord(f"agent record cannot be decoded: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> AgentInfo:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CorruptRecord(f"agent record is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CorruptRecord("agent record must be a JSON object")
        return cls.from_dict(data)


class AgentRegistry:
    """Registration and heartbeats of agents."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client

    def register(self, info: AgentInfo, ttl: float = 60) -> None:
        """Announce (or re-announce) an agent; it is listed for ``ttl`` seconds unless renewed."""
        if info.state not in AGENT_STATES:
            raise ValueError(f"agent state must be one of {', '.join(AGENT_STATES)}")
        now = time.time()
        stamped = dataclasses.replace(info, heartbeat=now)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(keys.agent(info.name), stamped.to_json(), px=max(1, int(ttl * 1000)))
        pipe.zadd(keys.AGENTS, {info.name: now + ttl})
        pipe.execute()

    def heartbeat(self, info: AgentInfo, ttl: float = 60) -> None:
        """Renew an agent's registration with its current description."""
        self.register(info, ttl)

    def list(self) -> list[AgentInfo]:
        """Live agents, by name; expired registrations are dropped."""
        self._redis.zremrangebyscore(keys.AGENTS, "-inf", time.time())
        names = sorted(replies.text(n) for n in self._redis.zrange(keys.AGENTS, 0, -1))
        if not names:
            return []
        out = []
        for raw in self._redis.mget([keys.agent(n) for n in names]):
            if raw is None:
                continue
            try:
                out.append(AgentInfo.from_json(raw))
            except CorruptRecord:
                continue
        return out

    def remove(self, name: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.agent(name))
        pipe.zrem(keys.AGENTS, name)
        pipe.execute()
