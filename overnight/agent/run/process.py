"""A task's command as a local subprocess: its own process group, stdout and stderr merged.

The command runs in a new session, so its process group holds it and every child it starts;
stopping the task signals the whole group, grandchildren included. A guard
(:mod:`overnight.agent.run.guard`) kills that group when the agent dies before seeing its end,
so no task outlives its agent, whatever kills the agent. Where the kernel offers a
pidfd (Linux 5.3+), waiting for the end is one blocking poll that wakes the moment the process
exits, rather than a loop of short sleeps.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from overnight.agent.environments.base import Process
from overnight.agent.run.guard import Guard, start_guard
from overnight.agent.run.monitor import ProcessTreeSampler, Sampler, tree_pids
from overnight.errors import TaskRunError

READ_SIZE = 64 * 1024
VMSTAT = Path("/proc/vmstat")


def kernel_oom_kills() -> int | None:
    """The kernel's count of OOM kills since boot (``oom_kill`` in /proc/vmstat, Linux 4.13+)."""
    try:
        for line in VMSTAT.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


class LocalProcess(Process):
    """A command started with :class:`subprocess.Popen`; ``ident`` is its pid.

    ``on_exit`` is called once, with the exit code, the first time ``poll`` or ``wait`` sees
    the process ended (the venv environment releases its in-use lease there). ``user`` is the
    (uid, gid) it runs as, without supplementary groups (default: the agent's own), ``umask``
    its umask (default: the agent's). ``oom_kills`` reads the host's count of OOM kills: one
    during the run, and a SIGKILL the agent did not send, say the OOM killer ended it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        on_exit: Callable[[int], None] | None = None,
        user: tuple[int, int] | None = None,
        umask: int = -1,
        oom_kills: Callable[[], int | None] = kernel_oom_kills,
    ) -> None:
        self._oom_kills = oom_kills
        self._oom_kills_before = oom_kills()
        if not argv:
            raise TaskRunError("the task has an empty command; record it again with a command")
        if not cwd.is_dir():
            raise TaskRunError(f"working directory {cwd} does not exist in the task's workspace")
        try:
            self._popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                bufsize=0,
                umask=umask,
                **_as_user(user),
            )
        except FileNotFoundError as exc:
            raise TaskRunError(f"command not found: {argv[0]}") from exc
        except PermissionError as exc:
            raise TaskRunError(
                f"command is not executable: {argv[0]}; make it executable (chmod +x) "
                "or run it through its interpreter"
            ) from exc
        except OSError as exc:
            raise TaskRunError(f"cannot start {argv[0]}: {exc}") from exc
        self._pgid = self._popen.pid  # a new session's leader is its process group's leader
        self._guard: Guard | None = start_guard(self._pgid)
        if self._guard is not None:
            # Dropped unseen to its end, the task is nobody's: the guard kills it then.
            weakref.finalize(self, self._guard.fire)
        self._on_exit = on_exit
        self._exit_lock = threading.Lock()
        self._ended = _pidfd_poller(self._popen.pid)
        if self._ended is not None:
            weakref.finalize(self, self._ended.close)

    def output(self) -> Iterator[bytes]:
        stream = self._popen.stdout
        assert stream is not None
        fd = stream.fileno()
        try:
            while True:
                chunk = os.read(fd, READ_SIZE)
                if not chunk:
                    return
                yield chunk
        finally:
            stream.close()

    def poll(self) -> int | None:
        return self._exited(self._popen.poll())

    def wait(self, timeout: float | None = None) -> int | None:
        if timeout is not None and self._ended is not None:
            self._ended.wait(timeout)
            return self.poll()
        try:
            code = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._exited(code)

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    @property
    def ident(self) -> str:
        return str(self._popen.pid)

    def close(self) -> None:
        """Close the output pipe without reading it (when ``output`` is never consumed)."""
        if self._popen.stdout is not None:
            self._popen.stdout.close()

    @property
    def pid(self) -> int:
        return self._popen.pid

    def pids(self) -> set[int]:
        """The process and all its descendants now alive."""
        return tree_pids(self.pid)

    def samplers(self) -> list[Sampler]:
        return [ProcessTreeSampler(self.pid)]

    def oom_killed(self) -> bool:
        if self._popen.returncode != -signal.SIGKILL or self._oom_kills_before is None:
            return False
        after = self._oom_kills()
        return after is not None and after > self._oom_kills_before

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group outlives its leader while children remain, so this also reaches processes
        # left behind after the command itself exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)

    def _exited(self, code: int | None) -> int | None:
        if code is None:
            return None
        with self._exit_lock:
            callback, self._on_exit = self._on_exit, None
            guard, self._guard = self._guard, None
        if guard is not None:
            guard.release()
        if callback is not None:
            callback(code)
        return code


def _as_user(user: tuple[int, int] | None) -> dict[str, Any]:
    if user is None:
        return {}
    uid, gid = user
    return {"user": uid, "group": gid, "extra_groups": []}


class _PidfdPoller:
    """A process's pidfd: readable once the process has ended."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        self._poll.poll(max(0, math.ceil(timeout * 1000)))

    def close(self) -> None:
        os.close(self._fd)


def _pidfd_poller(pid: int) -> _PidfdPoller | None:
    """A poller on ``pid``'s end, or None where pidfds do not exist (not Linux, old kernel)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return _PidfdPoller(pidfd_open(pid))
    except OSError:
        return None
