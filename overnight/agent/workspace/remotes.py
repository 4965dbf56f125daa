"""Reaching git remotes from an agent: its own credentials, no prompts, fetches a cancel stops.

Private repos use the agent's own credentials: its SSH keys and git credential helpers, or a token
per host from the agent's config (:class:`GitCredentials`), never the laptop's. git never prompts,
so a missing credential fails at once and the error names the host. A fetch runs in its own
process group and is killed when the task is canceled meanwhile (:func:`fetch`). A commit that no
branch or tag holds any more (a force-push, a deleted branch) is fetched by its id
(:func:`fetch_commit`); when the remote has lost it too, the error says so.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from overnight.agent.progress import StopCheck
from overnight.errors import GitError, PreparationCanceled, ReconstructError
from overnight.recorder.checkout import NO_SUCH_COMMIT, no_longer_on
from overnight.recorder.gitrepo import HARDENED_CONFIG, Git
from overnight.recorder.urls import url_host

_AUTH_HINTS = (
    "could not read username",
    "could not read password",
    "authentication failed",
    "terminal prompts disabled",
    "permission denied",
    "host key verification failed",
    "returned error: 403",
    "returned error: 401",
)
PINNED_REFS = "refs/overnight/commits/"
"""Where a mirror keeps the commits it fetched by id, so its pruning fetches never drop them."""
_STOP_POLL = 0.2  # seconds between looks at the cancel flag while git works


@dataclasses.dataclass(frozen=True)
class GitCredentials:
    """How an agent authenticates to git remotes: tokens per host and an ssh command.

    ``tokens`` maps a host (``github.com``), or a URL prefix (``https://git.lab:8443/``), to a
    token or ``user:token``; it is sent as an HTTP header, never written to disk or argv.
    ``ssh_command`` replaces ``ssh`` (``ssh -i /keys/deploy``); batch mode is always added.
    """

    tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ssh_command: str | None = None
    username: str = "x-access-token"  # for tokens given without a user

    def env(self) -> dict[str, str]:
        """Environment for git: no prompts of any kind, ssh in batch mode, token headers."""
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",  # an empty askpass disables graphical prompts too
            "SSH_ASKPASS": "",
            "GCM_INTERACTIVE": "never",
            "GIT_SSH_COMMAND": f"{self.ssh_command or 'ssh'} -o BatchMode=yes -o ConnectTimeout=15",
        }
        for i, (where, token) in enumerate(sorted(self.tokens.items())):
            prefix = where if "://" in where else f"https://{where}/"
            userpass = token if ":" in token else f"{self.username}:{token}"
            header = base64.b64encode(userpass.encode()).decode("ascii")
            env[f"GIT_CONFIG_KEY_{i}"] = f"http.{prefix}.extraHeader"
            env[f"GIT_CONFIG_VALUE_{i}"] = f"Authorization: Basic {header}"
        env["GIT_CONFIG_COUNT"] = str(len(self.tokens))
        return env


def fetch(git: Git, url: str, should_stop: StopCheck) -> None:
    """``git fetch --prune origin`` in ``git``'s repo; raises ReconstructError naming the cause.

    Raises :class:`PreparationCanceled` (git and its ssh killed) once ``should_stop()`` is true.
    """
    error = _fetch(git, url, should_stop, ("--prune",))
    if error is not None:
        raise ReconstructError(unreachable(url, error)) from error


def fetch_commit(git: Git, url: str, commit: str, should_stop: StopCheck) -> None:
    """Fetch ``commit`` by its id into ``git``'s mirror, kept under :data:`PINNED_REFS`.

    Raises ReconstructError saying the commit is no longer on ``url`` when the remote answers
    that it has no such object, or naming why it could not be reached otherwise.
    """
    refspec = f"{commit}:{PINNED_REFS}{commit}"
    error = _fetch(git, url, should_stop, (), refspec)
    if error is None:
        return
    if any(hint in error.stderr.lower() for hint in NO_SUCH_COMMIT):
        raise ReconstructError(no_longer_on(commit, url)) from error
    raise ReconstructError(unreachable(url, error)) from error


def _fetch(
    git: Git, url: str, should_stop: StopCheck, options: Sequence[str], *refspecs: str
) -> GitError | None:
    """Run ``git fetch`` from ``origin``; the error when it fails, None when it succeeds."""
    args = ("fetch", "--quiet", *options, "--no-tags", "origin", *refspecs)
    cmd = ["git", *(arg for item in HARDENED_CONFIG for arg in ("-c", item)), *args]
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=git.cwd,
            env=git.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # ssh and helpers in one group, killed together
        )
    except FileNotFoundError as exc:
        raise ReconstructError("git is not installed or not on PATH; install git") from exc
    waited = 0.0
    stderr = b""
    while True:
        try:
            stderr = proc.communicate(timeout=_STOP_POLL)[1]
            break
        except subprocess.TimeoutExpired:
            waited += _STOP_POLL
            timed_out = git.timeout is not None and waited >= git.timeout
            if should_stop() or timed_out:
                with contextlib.suppress(ProcessLookupError):  # it may have just ended
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                if not timed_out:
                    raise PreparationCanceled(f"canceled while fetching {url}") from None
                stderr = f"fatal: git fetch timed out after {git.timeout:g} s".encode()
                break
    if proc.returncode == 0:
        return None
    text = stderr.decode("utf-8", "replace")
    return GitError(
        f"git fetch failed: {text.strip() or f'exit code {proc.returncode}'}",
        returncode=proc.returncode,
        stderr=text,
    )


def unreachable(url: str, exc: GitError) -> str:
    """The one-line error for a remote git could not read; names the host when it is access."""
    message = f"cannot reach {url}: {exc.reason}"
    host = url_host(url)
    if host and any(hint in exc.stderr.lower() for hint in _AUTH_HINTS):
        message += (
            f"; the agent has no working credentials for {host}: set a token for {host} in "
            "the agent config (git_tokens), or give the agent an SSH key it accepts"
        )
    return message
