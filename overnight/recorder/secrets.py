"""What looks like a secret: variable names, values and file names that must not reach Redis.

Anyone with queue access reads a task's spec, so a recorded secret is a shared one. The checks
err on the side of refusing: the user can always configure a secret on the agent instead, or
say explicitly that it may be recorded (``--allow-secret-env``, ``--allow-secret-files``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import PurePosixPath

from overnight.errors import SecretFileError

SECRET_WORDS = (
    "PASS", "PWD", "PAT", "AUTH", "SESSION", "DSN", "SIGNATURE", "CREDENTIALS", "APIKEY",
)  # fmt: skip
"""A variable that has one of these as a word of its name (``DB_PASS``, ``GH_PAT``) is a secret."""

SECRET_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "PRIVATE", "COOKIE")
"""A variable whose name contains one of these anywhere (``HF_TOKEN``, ``APIKEY``) is a secret."""

_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})  # the shell's working directories
_WORDS = re.compile(r"[^A-Z0-9]+")

_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a password in a URL", re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")),
    ("a token in a URL", re.compile(r"https?://[^/@\s:]+@")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_\w{20,})")),
    ("a GitLab token", re.compile(r"\bglpat-[\w-]{16,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[\w-]{10,}")),
    ("an API key", re.compile(r"\bsk-[\w-]{16,}")),
    ("an AWS access key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{16,}")),
    ("a JWT", re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)

SECRET_FILES = (
    ".env", ".env.*", "*.env", ".netrc", "_netrc", ".pgpass", ".npmrc", ".pypirc", ".git-credentials",
    ".htpasswd", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*",
    "id_ecdsa*", "id_ed25519*", "credentials", "credentials*.json", "*credentials.json",
    "client_secret*.json", "service-account*.json", "service_account*.json", "*-sa-key.json",
    "secrets.yaml", "secrets.yml", "secrets.json", "secrets.toml", ".secrets*",
)  # fmt: skip
"""File names (matched on the last path component, case-insensitively) that usually hold keys."""

_NOT_SECRET_FILES = (".env.example", ".env.sample", ".env.template", ".env.dist")


def secret_word(name: str) -> str | None:
    """The secret-looking word in the variable name ``name``, if any."""
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return None
    found = next((word for word in SECRET_PARTS if word in upper), None)
    if found is None:
        words = set(_WORDS.split(upper))
        found = next((word for word in SECRET_WORDS if word in words), None)
    return found


def secret_value(value: str) -> str | None:
    """What in ``value`` looks like a credential ("a password in a URL", "a GitHub token")."""
    return next((what for what, pattern in _VALUE_PATTERNS if pattern.search(value)), None)


def secret_env(name: str, value: str) -> str | None:
    """Why the variable ``name=value`` looks like a secret (for an error message), or None."""
    word = secret_word(name)
    if word:
        return f"its name contains {word}"
    what = secret_value(value)
    return f"its value holds {what}" if what else None


def secret_file(path: str) -> bool:
    """Whether the file at the repo-relative ``path`` is named like one that holds keys."""
    name = PurePosixPath(path).name.lower()
    if name in _NOT_SECRET_FILES:
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_FILES)


def refuse_secret_files(paths: Sequence[str]) -> None:
    """Raise :class:`SecretFileError` naming the first of ``paths`` that looks like a key file."""
    found = [path for path in paths if secret_file(path)]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise SecretFileError(
            f"untracked file {found[0]}{more} looks like a secret (keys or credentials) and would "
            "be stored in the task for anyone with queue access to read; add it to .gitignore, "
            "or pass --allow-secret-files to record it anyway"
        )


def refuse_secrets_in_patch(patch: bytes, prefix: str = "", *, unpushed: bool = False) -> None:
    """Raise :class:`SecretFileError` when a line ``patch`` adds holds a credential, or (for the
    patch of ``unpushed`` commits, which travel as a bundle) it adds a file named like a key;
    the error names the file (``prefix`` before it: a submodule's path)."""
    where = "unpushed commits" if unpushed else "its uncommitted changes"
    current = ""
    for raw in patch.split(b"\n"):
        if raw.startswith(b"+++ "):
            name = raw[4:].decode("utf-8", "replace").strip('"')
            current = name[2:] if name.startswith("b/") else name
            if unpushed and name != "/dev/null" and secret_file(current):
                raise SecretFileError(
                    f"{prefix}{current}, in unpushed commits, looks like a secret (keys or "
                    "credentials) and would be stored in the task for anyone with queue access "
                    "to read; take it out of those commits (git rm --cached, then amend or "
                    "rebase) and add it to .gitignore, or pass --allow-secret-files"
                )
        elif raw.startswith(b"+"):
            what = secret_value(raw[1:].decode("utf-8", "replace"))
            if what:
                raise SecretFileError(
                    f"{prefix}{current} holds {what} in {where}, which would be stored in the "
                    "task for anyone with queue access to read; read the secret from the "
                    "agent's environment instead, or pass --allow-secret-files to record it "
                    "anyway"
                )


MASK = "***"
"""What a secret value is shown as."""


def masked_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the values of secret-looking variables replaced by :data:`MASK`."""
    return {name: MASK if secret_env(name, value) else value for name, value in env.items()}
