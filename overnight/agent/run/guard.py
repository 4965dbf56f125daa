"""A task's guard: a small process that kills the task's process group when its agent dies.

A task runs in a session of its own, so a signal to the agent's process group (SIGKILL of a
service, the OOM killer, a crash) never reaches it: a quiet task would run on beside its own
retry. Its guard, started next to it in yet another session, holds the read end of a pipe whose
write end only the agent has. The kernel closes that end whatever ends the agent, and the guard,
reading end of file without having been released, kills the task's whole group at once. The
agent releases the guard once it saw the task's end; the guard then exits leaving the group
alone (the group's id may name another process group by then).

The guard is a few lines of the standard library run by the agent's own interpreter (``-I``:
no site, no environment), so it imports nothing of overnight's and costs a few milliseconds.
The kernel's parent-death signal would not do: it fires when the *thread* that started the
task ends, and reaches only the task's first process, not what it started.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Mapping, Sequence

MARKER = "overnight-task-guard"
"""The guard's first argument, so that ``ps`` (and tests) tell it apart."""

RELEASE = b"release\n"

WAIT_FOR_AGENT = """\
import os, sys
said = b""
while True:
    try:
        chunk = os.read(0, 64)
    except InterruptedError:
        continue
    except OSError:
        break
    if not chunk:
        break
    said += chunk
released = b"release" in said
"""
"""The start of every guard's source: read stdin to its end; ``released`` says whether the
agent let the guard go (else it died)."""

SOURCE = (
    WAIT_FOR_AGENT
    + """\
import signal
if not released:
    try:
        os.killpg(int(sys.argv[2]), signal.SIGKILL)
    except OSError:
        pass
"""
)


class Guard:
    """A guard process; :meth:`release` once the task's end was seen.

    By default it guards the process group ``pgid``; ``argv`` and ``env`` run another guard
    (docker's, over a container), which must read its stdin in the same way: act at end of
    file unless it read :data:`RELEASE`.
    """

    def __init__(
        self,
        pgid: int = 0,
        *,
        argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if argv is None:
            argv = [sys.executable, "-I", "-S", "-c", SOURCE, MARKER, str(pgid)]
        self._popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=dict(env or {}),
            start_new_session=True,  # out of reach of a signal to the agent's group
        )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def release(self) -> None:
        """Let the guard go without touching the group."""
        self._close(RELEASE)

    def fire(self) -> None:
        """Have the guard kill the group now, as the agent's death would."""
        self._close(b"")

    def _close(self, word: bytes) -> None:
        stdin = self._popen.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                if word:
                    stdin.write(word)
                stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(5.0)


def start_guard(pgid: int) -> Guard | None:
    """A guard over ``pgid``, or None where it cannot start (the task then runs unguarded, as
    before: an agent's start still stops what a dead agent left)."""
    try:
        return Guard(pgid)
    except OSError:
        return None
