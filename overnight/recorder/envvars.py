"""Environment variables a task carries: only those named with ``--env``, never secrets by accident."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from overnight.errors import EnvVarError, SecretEnvError
from overnight.recorder.secrets import secret_env

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def record_env(
    entries: Sequence[str], environ: Mapping[str, str], *, allow_secret: bool = False
) -> dict[str, str]:
    """``NAME`` (value read from ``environ``) and ``NAME=VALUE`` entries as a name -> value dict."""
    recorded: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not _NAME.match(name):
            raise EnvVarError(
                f"--env {entry!r}: {name!r} is not a variable name; use --env NAME or --env NAME=VALUE"
            )
        if not sep:
            if name not in environ:
                raise EnvVarError(
                    f"--env {name}: {name} is not set here; set it or pass --env {name}=VALUE"
                )
            value = environ[name]
        why = secret_env(name, value)
        if why and not allow_secret:
            raise SecretEnvError(
                f"--env {name} looks like a secret ({why}) and would be stored "
                "in the task for anyone with queue access to read; configure it on the agent, "
                "or pass --allow-secret-env to record it anyway"
            )
        recorded[name] = value
    return recorded
