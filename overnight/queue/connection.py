"""Connecting to Redis: one place that turns a URL into a checked client or a clear error.

Every form redis-py reads works: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS;
``?ssl_ca_certs=/path/ca.pem`` or ``?ssl_cert_reqs=none`` in the query) and
``unix:///path/to/socket?db=0``, and ``redis+sentinel://`` for a master found through Redis
Sentinel (:mod:`overnight.queue.sentinel`). Messages show the URL with its password replaced.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.exceptions import AuthorizationError

from overnight.errors import ConnectionFailed
from overnight.queue import sentinel
from overnight.queue.replication import Acks

_SECRET_PARAMS = frozenset({"password", "ssl_password", "sentinel_password"})
_FORMS = (
    "redis://[user:password@]host:port/db, rediss://..., unix:///path/to/socket or " + sentinel.FORM
)


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable URL>"
    secret_query = any(k in _SECRET_PARAMS for k, _ in query)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not (at and ":" in userinfo) and not secret_query:
        return url
    netloc = (
        f"{userinfo.partition(':')[0]}:***@{hostport}" if at and ":" in userinfo else parts.netloc
    )
    text = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        hidden = [(k, "***" if k in _SECRET_PARAMS else v) for k, v in query]
        text += "?" + (urlencode(hidden, safe="/*") if secret_query else parts.query)
    return text + (f"#{parts.fragment}" if parts.fragment else "")


def connect(url: str, *, timeout: float = 5.0, read_timeout: float | None = None) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``),
    checked with a PING; ``read_timeout`` (else ``timeout``) bounds each reply.

    The client returns bytes (RQ needs that). Raises :class:`ConnectionFailed` naming the URL
    without its password.
    """
    shown = redact_url(url)
    replies = timeout if read_timeout is None else read_timeout
    try:
        if urlsplit(url).scheme == sentinel.SCHEME:
            client = sentinel.SentinelURL.parse(url).client(replies, timeout)
        else:
            client = redis.Redis.from_url(
                url, socket_timeout=replies, socket_connect_timeout=timeout
            )
    except (ValueError, TypeError) as exc:
        raise ConnectionFailed(
            f"invalid Redis URL {shown}: {_reason(exc, url, shown)}; use {_FORMS}"
        ) from exc
    try:
        client.ping()
    except (redis.AuthenticationError, AuthorizationError) as exc:
        client.close()
        raise ConnectionFailed(
            f"Redis at {shown} refused the credentials: {_reason(exc, url, shown)}; check the "
            "user and password in the URL (redis://user:password@host:port/db)"
        ) from exc
    except redis.ResponseError as exc:  # NOPERM on PING: the user exists but may not do this
        client.close()
        raise ConnectionFailed(
            f"Redis at {shown} refused PING: {_reason(exc, url, shown)}; give the user the "
            "commands overnight needs (ACL SETUSER ... +@all ~* &*)"
        ) from exc
    except redis.RedisError as exc:
        client.close()
        raise ConnectionFailed(
            f"cannot reach Redis at {shown}: {_reason(exc, url, shown)}; start Redis or pass "
            "--redis-url (or set OVERNIGHT_REDIS_URL)"
        ) from exc
    return client


def acks_for(url: str) -> Acks:
    """Which writes wait for replicas at ``url``: behind Sentinel, the URL's ``wait_replicas``
    (default 1); elsewhere none (an invalid URL fails in :func:`connect`, not here)."""
    try:
        if urlsplit(url).scheme == sentinel.SCHEME:
            return sentinel.SentinelURL.parse(url).acks()
    except ValueError:
        pass
    return Acks()


def _reason(exc: Exception, url: str, shown: str) -> str:
    """The first line of what redis-py said, with the URL (and so its password) redacted."""
    text = str(exc).replace(url, shown).strip()
    try:
        parts = urlsplit(url)
        secrets = [parts.password, *(v for k, v in parse_qsl(parts.query) if k in _SECRET_PARAMS)]
    except ValueError:
        secrets = []
    for secret in secrets:
        if secret and len(secret) >= 4:  # shorter ones would mangle ordinary words
            text = text.replace(secret, "***")
    return text.splitlines()[0] if text else type(exc).__name__


def persistence_warning(client: redis.Redis) -> str | None:
    """What a restart of this Redis would lose, in one line; None when it keeps every change
    on disk (``appendonly yes``) or does not say (``CONFIG`` refused, as managed services do)."""
    try:
        config = client.config_get("appendonly")
        config.update(client.config_get("save"))
    except redis.RedisError:
        return None
    values = {str(k): str(v) for k, v in config.items()}
    if values.get("appendonly") == "yes":
        return None
    fix = "set appendonly yes in its config (or CONFIG SET appendonly yes, then CONFIG REWRITE)"
    if not values.get("save", "").strip():
        return (
            f"this Redis keeps nothing on disk: a restart loses every task, log and result; {fix}"
        )
    return (
        f"this Redis only snapshots to disk (save {values['save']}): a crash loses what changed "
        f"since the last snapshot; {fix}"
    )
