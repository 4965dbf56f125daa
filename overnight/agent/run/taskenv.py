"""What of the agent's own environment a task and a build see: an allowlist, never the rest.

Anyone who can enqueue runs code on the agent, so a task must not inherit the agent's settings
(``OVERNIGHT_REDIS_URL`` with its password, ``OVERNIGHT_GIT_TOKENS``) or its credentials
(``AWS_*``, ``GITHUB_TOKEN``...). A task gets only the variables named here (locale, time zone,
proxies, CA bundles, CUDA and NVIDIA settings), the names the agent's ``pass_env`` setting adds
(``HF_HOME``, ``WANDB_*``), and the values of its ``env`` setting; the pipeline adds the task's
own recorded env and its ``OVERNIGHT_*`` variables. A build (uv, which runs sdists' setup.py)
gets the same plus the installers' own variables (``UV_*``, ``PIP_*``) and ``PYENV_ROOT``.
Git tokens never pass: they reach git alone, as config in git's environment
(:mod:`overnight.agent.workspace.remotes`).

Docker mode uses :meth:`TaskEnv.task` with ``host_paths=False``: a container has its own
``PATH``, ``HOME`` and files, so only the variables that mean the same inside are handed over.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping

from overnight.agent.config import AgentConfig
from overnight.recorder.secrets import secret_word

_PROXIES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ftp_proxy")
PORTABLE = frozenset({"LANG", "LANGUAGE", "TZ", "TERM", *_PROXIES, *(p.upper() for p in _PROXIES)})
"""Variables that mean the same on the host and in a container."""
HOST_PATHS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "TMPDIR",
        "LD_LIBRARY_PATH",  # where CUDA and other libraries are: not a secret, often needed
        "NVIDIA_VISIBLE_DEVICES",  # in a container the engine sets it for the task's GPUs
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    }
)
"""Variables that name the host's own folders, user and devices: venv tasks only."""
PREFIXES = ("LC_", "CUDA_", "NVIDIA_")
"""Families passed whole (``CUDA_VISIBLE_DEVICES`` itself is set per task by the pipeline), but
for names that look like secrets; ``pass_env`` globs likewise, its exact names always."""
BUILD_PREFIXES = ("UV_", "PIP_")
"""The installers' settings, passed to builds only (an index URL may carry a login)."""
BUILD_NAMES = frozenset({"PYENV_ROOT"})
NEVER = ("OVERNIGHT_",)
"""The agent's own settings: never passed, whatever ``pass_env`` says (the pipeline sets the
task's ``OVERNIGHT_*`` variables itself)."""


@dataclasses.dataclass(frozen=True)
class TaskEnv:
    """The agent's environment (``host``) and what its settings add to every task."""

    host: Mapping[str, str]
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)  # AgentConfig.env
    pass_env: tuple[str, ...] = ()  # AgentConfig.pass_env: names or globs (HF_*)

    @classmethod
    def from_config(cls, config: AgentConfig, host: Mapping[str, str] | None = None) -> TaskEnv:
        return cls(
            dict(os.environ if host is None else host), dict(config.env), tuple(config.pass_env)
        )

    def task(self, *, host_paths: bool = True) -> dict[str, str]:
        """A task's base environment; ``host_paths=False``: without the host's own folders."""
        env = {name: value for name, value in self.host.items() if self._passes(name, host_paths)}
        env.update(self.extra)
        return env

    def build(self) -> dict[str, str]:
        """A build's environment: a task's, plus the installers' variables."""
        env = self.task()
        env.update(
            (name, value)
            for name, value in self.host.items()
            if name.startswith(BUILD_PREFIXES) or name in BUILD_NAMES
        )
        return env

    def _passes(self, name: str, host_paths: bool) -> bool:
        if name.startswith(NEVER):
            return False
        if name in PORTABLE or name in self.pass_env:
            return True
        if name in HOST_PATHS:
            return host_paths
        if secret_word(name):  # NVIDIA_API_KEY: a family or a glob names no credential
            return False
        return name.startswith(PREFIXES) or any(
            fnmatch.fnmatchcase(name, pattern) for pattern in self.pass_env
        )
