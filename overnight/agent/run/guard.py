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

MARKER = "overnight-task-guard"
"""The guard's first argument, so that ``ps`` (and tests) tell it apart."""

RELEASE = b"release\n"

SOURCE = """\
import os, signal, sys
pgid = int(sys.argv[2])
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
if b"release" not in said:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Guard:
    """The guard of one process group; :meth:`release` once the task's end was seen."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self._popen = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SOURCE, MARKER, str(pgid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env={},
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
