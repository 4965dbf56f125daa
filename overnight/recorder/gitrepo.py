"""Running git: argument lists, a clean environment, and settings the user's config cannot change.

Every git call in overnight (recorder and agent) goes through :class:`Git`. User configuration
that would change what overnight reads or writes (``diff.noprefix``, ``diff.external``,
``color.ui=always``, ``core.autocrlf``, global and system attributes files, hooks, fsmonitor) is
overridden on the command line, and
``ext::`` URLs (a command as transport, say in a task's ``.gitmodules``) are never followed;
settings that only concern access (credential helpers, ``url.*.insteadOf``, ssh) are kept.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from overnight.errors import GitError

HARDENED_CONFIG: tuple[str, ...] = (
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.quotepath=false",
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.attributesFile=/dev/null",  # attributes come from the repo alone, as on an agent
    "protocol.ext.allow=never",  # ext:: URLs run commands, whatever protocol.allow says
    "core.pager=cat",
    "add.ignoreErrors=false",
    "color.ui=never",
    "diff.noprefix=false",
    "diff.mnemonicprefix=false",
    "diff.external=",
    "diff.relative=false",
    "diff.submodule=short",
    "apply.whitespace=nowarn",
    "advice.detachedHead=false",
    "gc.auto=0",
    "maintenance.auto=false",
)
"""``-c`` settings given to every git command."""

# Variables that would point git at another repository, index or object store than the one
# named by ``cwd``, or change how it prints; the recorder sets the ones it needs itself.
_DROPPED_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_EXTERNAL_DIFF",
        "GIT_DIFF_OPTS",
        "GIT_PAGER",
        "GIT_QUARANTINE_PATH",
        "GIT_REPLACE_REF_BASE",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",  # config in the environment could outrank our -c settings
        "GIT_CONFIG_COUNT",
        "GIT_FLUSH",
        "GIT_TRACE",
        "GIT_TRACE2",
        "GIT_TRACE2_EVENT",
    }
)

_FIXED_ENV = {
    "LC_ALL": "C",  # git's messages in English, so its first error line can be quoted and read
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",  # reading never takes the user's index.lock
    "GIT_ATTR_NOSYSTEM": "1",  # likewise: no system-wide attributes file
}


def git_environ(
    environ: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a git subprocess runs with: ``environ`` cleaned, then ``extra`` on top."""
    base = os.environ if environ is None else environ
    env = {
        k: v
        for k, v in base.items()
        if k not in _DROPPED_ENV and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env.update(_FIXED_ENV)
    if extra:
        env.update(extra)
    return env


class Git:
    """git commands run in one directory with a fixed environment."""

    def __init__(
        self,
        cwd: Path,
        *,
        environ: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.cwd = cwd
        self.env = git_environ(environ, extra_env)
        self.timeout = timeout

    def at(self, cwd: Path) -> Git:
        """The same settings, run in another directory."""
        other = Git(cwd, environ={}, timeout=self.timeout)
        other.env = dict(self.env)
        return other

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        config: Sequence[str] = (),
    ) -> bytes:
        """Run ``git ARGS`` and return its stdout; raises :class:`GitError` when git fails."""
        cmd = ["git"]
        for item in (*HARDENED_CONFIG, *config):
            cmd += ["-c", item]
        cmd += list(args)
        full_env = {**self.env, **env} if env else self.env
        if not self.cwd.is_dir():
            raise GitError(f"cannot run git in {self.cwd}: no such folder")
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.cwd,
                env=full_env,
                input=input,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed or not on PATH; install git") from exc
        except subprocess.TimeoutExpired as exc:
            raise GitError(
                f"git {args[0]} did not finish within {self.timeout:g} s",
                returncode=124,
                stderr=f"fatal: git {args[0]} timed out after {self.timeout:g} s",
            ) from exc
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace")
            err = GitError(
                f"git {args[0]} failed: {stderr.strip() or f'exit code {proc.returncode}'}",
                returncode=proc.returncode,
                stderr=stderr,
            )
            raise err
        return proc.stdout

    def text(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """``run`` decoded, with the trailing newline removed."""
        return self.run(*args, env=env).decode("utf-8", "surrogateescape").rstrip("\n")

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> bool:
        """Whether ``git ARGS`` succeeds."""
        try:
            self.run(*args, env=env)
        except GitError:
            return False
        return True


def split_z(data: bytes) -> list[str]:
    """Split NUL-terminated git output (``-z``) into paths."""
    return [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0") if p]
