"""Who may use the page: the address it listens on, the token beyond this machine, CSRF.

- On 127.0.0.1/localhost/::1 (the default) only requests naming such a host are served, so a
  web page elsewhere cannot reach the server through a DNS name rebound to 127.0.0.1.
- On any other address the server refuses to start without a token (the ``ui_token`` setting,
  or one generated and printed with ``--generate-token``); a browser presents it once as
  ``?token=`` and then carries it in an HttpOnly, SameSite=Strict cookie.
- Every action is a POST carrying the server's CSRF token, which only its own pages hold; a
  POST whose ``Origin`` is another site is refused as well.
- Every response forbids inline scripts and framing (a Content-Security-Policy), so even text
  that escaped escaping could not run.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from overnight.errors import UiError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_COOKIE = "overnight_ui_token"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" would make form POSTs say Origin: null
    (b"x-frame-options", b"DENY"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Access:
    """What the server checks: the token (None on a local address) and its CSRF secret."""

    host: str
    token: str | None = None
    csrf: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(32))
    read_only: bool = False

    @classmethod
    def for_address(
        cls, host: str, *, token: str | None, generate: bool = False, read_only: bool = False
    ) -> Access:
        """The access for listening on ``host``; raises :class:`UiError` for an address beyond
        this machine without a token."""
        if is_local(host):
            return cls(host, token or None, read_only=read_only)
        if not token and generate:
            token = secrets.token_urlsafe(24)
        if not token:
            raise UiError(
                f"refusing to serve the queue on {host}, beyond this machine, without a token: "
                "set ui_token (OVERNIGHT_UI_TOKEN or the config file), or pass --generate-token "
                "to have one made and printed; or leave --host at 127.0.0.1"
            )
        return cls(host, token, read_only=read_only)

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def is_local(host: str) -> bool:
    return host.strip("[]") in LOCAL_HOSTS


class Guard:
    """ASGI middleware: host check (local), token check (elsewhere), cross-site POSTs refused,
    security headers on every response."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        netloc = headers.get("host", "")
        host = _hostname(netloc)
        if self.access.token is None and not is_local(host):
            await _plain(send, 421, "this server answers only to 127.0.0.1 or localhost")
            return
        if self.access.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if "token" in query:
                await self._take_token(scope, send, query)
                return
            if not self.access.token_ok(_cookie(headers.get("cookie", ""), TOKEN_COOKIE)):
                await _plain(send, 401, "open the address `overnight ui` printed (with ?token=)")
                return
        if scope["method"] == "POST":
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != netloc:
                await _plain(send, 403, "refused: this request came from another site")
                return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, secured)

    async def _take_token(self, scope: Scope, send: Send, query: dict[str, str]) -> None:
        """``?token=`` in a link: set the cookie and send the browser on without it (so the
        token leaves the address bar and its history)."""
        if not self.access.token_ok(query.pop("token")):
            await _plain(send, 401, "wrong token: open the address `overnight ui` printed")
            return
        rest = urlencode(query)
        location = scope.get("path", "/") + (f"?{rest}" if rest else "")
        cookie = f"{TOKEN_COOKIE}={self.access.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    *HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _hostname(netloc: str) -> str:
    """``[::1]:8765`` -> ``::1``, ``localhost:8765`` -> ``localhost``."""
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


async def _plain(send: Send, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})
