"""Remote URLs without credentials, so a task spec never carries the laptop's tokens.

``https://user:token@host/r.git`` loses its user info (a lone user name in an https URL is often a
token); query parameters that look like credentials (``?token=``, ``access_token``,
``private_token``, signatures) are dropped; ssh URLs keep their user (``git@``, not a secret) but
lose a password. scp-like addresses (``git@host:org/r.git``) and local paths are unchanged.

An agent fetches only network URLs (:func:`is_network_url`) unless it sets ``allow_local_repos``:
a local path would let a task read any repository on the agent's host.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from overnight.errors import LocalRepoError

_SECRET_PARAM = re.compile(
    r"token|secret|passw|pwd|key|auth|sig|credential|session|code|ticket", re.IGNORECASE
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_NETWORK_SCHEMES = frozenset({"https", "http", "git", *_SSH_SCHEMES})
# [user@]host:path, git's scp-like form; neither part may look like an option, and a second
# colon right after the host is git's transport::address (ext::, fd::), not a host.
_SCP_LIKE = re.compile(r"^(?:[^-@/:\s][^@/:\s]*@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][\w.-]*):(?!:)")
ALLOW_LOCAL_HINT = "set allow_local_repos on the agent (OVERNIGHT_ALLOW_LOCAL_REPOS=1)"


def strip_credentials(url: str) -> str:
    """``url`` with passwords, tokens and credential-like query parameters removed."""
    if not _SCHEME.match(url):
        return url  # scp-like (user@host:path) or a local path: no place for a password
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        keep_user = parts.scheme.lower() in _SSH_SCHEMES and user
        netloc = f"{user}@{hostport}" if keep_user else hostport
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not _SECRET_PARAM.search(k)]
        query = urlencode(kept) if len(kept) != len(pairs) else query
    fragment = "" if _SECRET_PARAM.search(parts.fragment) else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def url_host(url: str) -> str:
    """The host an URL or scp-like address points at (``""`` for a local path)."""
    if _SCHEME.match(url):
        host = urlsplit(url).hostname
        return host or ""
    match = re.match(r"^(?:[^@/]+@)?([^:/]+):(?!/)", url)
    return match.group(1) if match else ""


def is_network_url(url: str) -> bool:
    """Whether git would reach ``url`` over the network: https, http, ssh or git URLs with a
    host, or an scp-like ``user@host:path``; never a local path, ``file://`` or a transport
    helper (``ext::``, ``fd::``)."""
    if _SCHEME.match(url):
        parts = urlsplit(url)
        host = parts.hostname or ""
        return parts.scheme.lower() in _NETWORK_SCHEMES and bool(host) and host[0] != "-"
    return bool(_SCP_LIKE.match(url))


def require_network_url(url: str, field: str) -> None:
    """Raise :class:`LocalRepoError` naming ``field`` unless ``url`` is a network URL."""
    if not is_network_url(url):
        raise LocalRepoError(
            f"{field} {strip_credentials(url)!r} is a local path or an unknown transport, which "
            "agents do not fetch: push the repository to a server (https, ssh) and enqueue "
            f"again, or {ALLOW_LOCAL_HINT}"
        )
