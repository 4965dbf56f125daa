"""Where outputs may be kept: the ``output_store`` setting, checked when configuration is read.

Unset or ``redis``: the queue's own Redis. Otherwise an URL: ``file:///mnt/shared/overnight`` (a
folder here or a mounted share), ``sftp://[user@]host[:port]/path`` (a storage server over SSH;
``?key_filename=`` and ``?known_hosts=`` name a key and a known_hosts file) or
``s3://bucket/prefix``. A store's URL is shown and recorded without a password or a
credential-like query parameter (:func:`public_store_url`).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

from overnight.errors import ConfigError
from overnight.recorder.urls import strip_credentials

REDIS = "redis"
STORE_SCHEMES = ("file", "sftp", "s3")
SFTP_OPTIONS = ("key_filename", "known_hosts")
EXAMPLE = "e.g. file:///mnt/shared/overnight or sftp://storage/srv/overnight"


def public_store_url(url: str) -> str:
    """``url`` without its password and credential-like query parameters; an sftp URL keeps
    its user name (a login, not a secret)."""
    parts = urlsplit(url)
    shown = strip_credentials(url)
    if parts.scheme.lower() == "sftp" and parts.username:
        public = urlsplit(shown)
        shown = urlunsplit(public._replace(netloc=f"{parts.username}@{public.netloc}"))
    return shown


def check_output_store(value: str | None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is unset, ``redis`` or a store URL this
    version can open (scheme, host, folder and options checked; nothing is contacted)."""
    if value is None or value == REDIS:
        return
    shown = public_store_url(value)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in STORE_SCHEMES or "://" not in value:
        raise ConfigError(
            f"output_store {shown!r} is not {REDIS!r} or a file://, sftp:// or s3:// URL; set "
            f"it to one ({EXAMPLE}), or leave it unset to keep outputs in Redis"
        )
    try:
        parts.port  # noqa: B018 -- urlsplit checks the port only when asked
    except ValueError as exc:
        raise ConfigError(f"output_store {shown!r} has an invalid port: {exc}") from exc
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"output_store {shown!r} names a host; a folder is file:///path (three slashes), "
            "on this machine or a mounted share; a server is sftp://host/path"
        )
    if scheme != "file" and not parts.hostname:
        what = "bucket" if scheme == "s3" else "host"
        raise ConfigError(f"output_store {shown!r} names no {what}; set it to {EXAMPLE}")
    if scheme != "s3" and not parts.path.strip("/"):
        raise ConfigError(f"output_store {shown!r} names no folder; add its path ({EXAMPLE})")
    allowed = SFTP_OPTIONS if scheme == "sftp" else ()
    unknown = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)} - set(allowed))
    if unknown or (parts.query and not allowed):
        known = f"only {', '.join(allowed)}" if allowed else "none"
        raise ConfigError(
            f"output_store {shown!r} has unknown option(s) {', '.join(unknown) or parts.query!r}; "
            f"a {scheme}:// store takes {known}"
        )
