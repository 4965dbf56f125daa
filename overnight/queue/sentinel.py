"""Redis behind Sentinel: the ``redis+sentinel://`` URL and a client that follows failovers.

``redis+sentinel://[user:password@]host1[:26379][,host2[:26379]...]/service[/db][?options]``

- the hosts are the Sentinels (port 26379 when left out), ``service`` the name they monitor the
  master under (``sentinel monitor <service> ...``), ``db`` the database (0 when left out);
- ``user:password`` log in to the Redis servers (master and replicas), as in ``redis://``;
- ``sentinel_username`` / ``sentinel_password`` (query) log in to the Sentinels, when they ask;
- ``wait_replicas`` (default 1; 0: never wait) and ``wait_timeout`` (seconds, default 2): an
  acknowledged write (:mod:`overnight.queue.replication`) returns once that many replicas have it.

The client asks the Sentinels for the master before each new connection, and drops a connection
whose server turned into a replica, so a failover looks like a short outage to its callers. RQ
(3.x) takes it as it takes any client: the agent's RQ ``Worker`` and ``Queue`` objects use the
client they are given; RQ's scheduler and worker pool, which rebuild clients from a pool's
keyword arguments, are not used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from overnight.queue.replication import Acks

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379
FORM = "redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]"
_OPTIONS = frozenset({"sentinel_username", "sentinel_password", "wait_replicas", "wait_timeout"})


@dataclasses.dataclass(frozen=True)
class SentinelURL:
    """What a ``redis+sentinel://`` URL says; :meth:`parse` raises ValueError naming the flaw."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    wait_replicas: int = 1
    wait_timeout: float = 2.0

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise ValueError(f"not a {SCHEME}:// URL")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
        sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
        if not sentinels:
            raise ValueError("no Sentinel host before the service name")
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValueError("the path must be /service or /service/db")
        db = path[1] if len(path) == 2 else "0"
        if not db.isdigit():
            raise ValueError(f"the database must be a number, not {db!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - _OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} (known: {', '.join(sorted(_OPTIONS))})"
            )
        return cls(
            sentinels=sentinels,
            service=unquote(path[0]),
            db=int(db),
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_username=query.get("sentinel_username") or None,
            sentinel_password=query.get("sentinel_password") or None,
            wait_replicas=_number(query, "wait_replicas", 1, int),
            wait_timeout=_number(query, "wait_timeout", 2.0, float),
        )

    def acks(self) -> Acks:
        """The acknowledged writes this URL asks for."""
        return Acks(self.wait_replicas, self.wait_timeout)

    def client(self, socket_timeout: float, connect_timeout: float) -> redis.Redis:
        """A client of the current master (not checked: the first command finds it)."""
        sentinel_auth = {
            "username": self.sentinel_username,
            "password": self.sentinel_password,
        }
        manager = Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            sentinel_kwargs={
                "socket_timeout": connect_timeout,
                "socket_connect_timeout": connect_timeout,
                **{k: v for k, v in sentinel_auth.items() if v is not None},
            },
        )
        master = manager.master_for(  # type: ignore[no-untyped-call]
            self.service,
            redis_class=SentinelMaster,
            db=self.db,
            username=self.username,
            password=self.password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
        )
        return cast(redis.Redis, master)


class SentinelMaster(redis.Redis):
    """The master's client; closing it also closes its connections to the Sentinels."""

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if isinstance(manager, Sentinel):
            manager.close()


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"no host in {item!r}")
    if port and not port.isdigit():
        raise ValueError(f"bad Sentinel port in {item!r}")
    return (host, int(port) if port else DEFAULT_PORT)


def _number(query: dict[str, str], name: str, default: Any, kind: type[Any]) -> Any:
    if name not in query:
        return default
    try:
        value = kind(query[name])
    except ValueError:
        raise ValueError(f"{name} must be a number, not {query[name]!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value
