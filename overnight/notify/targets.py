"""Where a notification goes: a ``notify`` setting's values.

- ``https://hooks.slack.com/services/...`` (any http or https URL): a Slack-compatible webhook,
  POSTed ``{"text": ...}`` as JSON (Slack, Mattermost, Rocket.Chat, Discord's ``/slack`` hooks);
- ``ntfy+https://ntfy.sh/my-topic``: an ntfy topic, POSTed the text with a ``Title`` header;
- ``mailto:me@lab.org`` (several: ``mailto:a@x.org,b@x.org``): e-mail through the agent's SMTP
  server (its ``smtp_*`` settings; the password never leaves the agent).

A webhook URL is a secret (whoever has it may post): :func:`redacted` is how one is shown in logs
and notes, its scheme and host only.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

from overnight.errors import NotifyTargetError

SLACK, NTFY, MAIL = "slack", "ntfy", "mail"
_ADDRESS = re.compile(r"^[^@\s,<>\"]+@[^@\s,<>\"]+\.[^@\s,<>\"]+$")
ACCEPTED = "use an https:// webhook URL, ntfy+https://HOST/TOPIC or mailto:ADDRESS"


@dataclasses.dataclass(frozen=True)
class Target:
    """One place to send to: ``kind`` (slack, ntfy, mail) and its URL or addresses."""

    kind: str
    url: str = ""  # slack, ntfy: where to POST
    addresses: tuple[str, ...] = ()  # mail

    @property
    def shown(self) -> str:
        """How the target appears in logs and notes: never a webhook's secret path."""
        if self.kind == MAIL:
            return "mailto:" + ",".join(self.addresses)
        return redacted(self.url, prefix="ntfy+" if self.kind == NTFY else "")


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    """The agent's SMTP server for ``mailto:`` targets (the ``smtp_*`` settings)."""

    host: str | None = None
    port: int = 587
    sender: str = ""
    starttls: bool = True
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)


def parse_target(text: str) -> Target:
    """A ``notify`` value as a :class:`Target`; raises :class:`NotifyTargetError`."""
    value = text.strip()
    if value.lower().startswith("mailto:"):
        addresses = tuple(a.strip() for a in value[len("mailto:") :].split(",") if a.strip())
        bad = [a for a in addresses if not _ADDRESS.match(a)]
        if not addresses or bad:
            raise NotifyTargetError(
                f"notify target mailto:{','.join(bad)} is not an e-mail address; {ACCEPTED}"
            )
        return Target(MAIL, addresses=addresses)
    kind = SLACK
    url = value
    if value.lower().startswith("ntfy+"):
        kind, url = NTFY, value[len("ntfy+") :]
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise NotifyTargetError(f"notify target {redacted(value)} is not a URL; {ACCEPTED}")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise NotifyTargetError(
            f"notify target {redacted(value)} holds spaces or control characters; {ACCEPTED}"
        )
    return Target(kind, url=url)


def parse_targets(values: tuple[str, ...] | list[str]) -> list[Target]:
    """Each value once, parsed (a bad one raises)."""
    seen: dict[str, Target] = {}
    for value in values:
        seen.setdefault(value.strip(), parse_target(value))
    return list(seen.values())


def redacted(url: str, prefix: str = "") -> str:
    """``https://hooks.slack.com/…``: scheme and host, the path and any credentials left out."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    scheme = parts.scheme or "?"
    tail = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{prefix}{scheme}://{host}{tail}"
