"""A task running in a Docker container, seen through the :class:`Process` interface.

A :class:`DockerProcess` holds nothing but the container and its guard (which kills it if
this agent dies before its end: :mod:`overnight.agent.environments.docker.guard`): one made for
an existing container (after an agent restart) behaves like the one
:meth:`DockerEnvironment.start` returned, and ``since`` resumes its output after the last chunk
already read.
"""

from __future__ import annotations

import calendar
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import docker.errors
import requests.exceptions

from overnight.agent.environments.base import Process
from overnight.agent.environments.docker.stats import DockerStatsSampler, container_pids
from overnight.agent.run.guard import Guard
from overnight.agent.run.logbatch import LineAssembler
from overnight.agent.run.monitor import Sampler

_STREAM_ERRORS = (requests.exceptions.RequestException, docker.errors.APIError, OSError)
_MATCHED = 5  # stored lines matched against the container's log to find where to resume
RESUME_WINDOW = 3600.0  # seconds of the container's log read back to find it
_ROUNDING = 0.01  # log times are stored to the millisecond: a line read at once looks earlier


class DockerProcess(Process):
    """A container started by overnight; ``ident`` is its id.

    ``since`` (unix seconds, as :attr:`last_log_time` gave it) skips output up to and including
    that moment, so a new process for the same container continues where the old one stopped.
    """

    def __init__(
        self, container: Any, *, since: float | None = None, guard: Guard | None = None
    ) -> None:
        self.container = container
        self._guard = guard  # kills the container if this agent dies before its end
        self.last_log_time: float | None = since  # docker's timestamp of the last chunk read
        self._exit_code: int | None = None
        self._ended = threading.Event()
        self._watcher: threading.Thread | None = None
        self._watch_lock = threading.Lock()

    @property
    def ident(self) -> str:
        return str(self.container.id)

    @property
    def task_id(self) -> str:
        return str(self.container.labels.get("overnight.task", ""))

    def output(self) -> Iterator[bytes]:
        """Stdout and stderr as the container wrote them; reconnects if the stream breaks."""
        while True:
            since = self.last_log_time
            try:
                stream = self.container.logs(
                    stream=True,
                    follow=True,
                    timestamps=True,
                    since=int(since) if since is not None and since >= 1 else None,
                )
                try:
                    for chunk in stream:
                        stamp, _, data = chunk.partition(b" ")
                        moment = parse_timestamp(stamp)
                        if since is not None and moment <= since:
                            continue
                        self.last_log_time = moment
                        yield data
                finally:
                    _close(stream)
            except docker.errors.NotFound:
                return
            except _STREAM_ERRORS:
                pass  # engine restarting or connection cut: ask again below
            if self.wait(0.5) is not None:  # ended; or still running: ask for output again
                return

    def poll(self) -> int | None:
        self._watch()
        return self._exit_code if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._watch()
        self._ended.wait(timeout)
        return self._exit_code if self._ended.is_set() else None

    def _watch(self) -> None:
        """Start the thread that blocks in the engine's wait until the container stops."""
        with self._watch_lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._await_exit, name=f"overnight-wait-{self.ident[:12]}", daemon=True
                )
                self._watcher.start()

    def _await_exit(self) -> None:
        while True:
            try:
                self._exit_code = int(self.container.wait()["StatusCode"])
                break
            except docker.errors.NotFound:
                break  # removed by someone else: the exit code is lost
            except _STREAM_ERRORS:
                time.sleep(0.5)  # the engine restarts or the connection broke: ask again
        self._release()
        self._ended.set()

    def _release(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.release()

    def terminate(self) -> None:
        self._signal("SIGTERM")

    def kill(self) -> None:
        self._signal("SIGKILL")

    def pids(self) -> set[int]:
        return container_pids(self.container)

    def oom_killed(self) -> bool:
        """The engine's own word: the container's ``State.OOMKilled``."""
        try:
            self.container.reload()
            return bool(self.container.attrs.get("State", {}).get("OOMKilled"))
        except docker.errors.DockerException:
            return False

    def samplers(self) -> list[Sampler]:
        container = self.container
        return [DockerStatsSampler(lambda: container.stats(stream=False))]

    def discard(self) -> None:
        """Delete the container; call once its output and exit code are saved."""
        self._release()
        try:
            self.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal of it is already in progress
                raise

    def _signal(self, name: str) -> None:
        # 409: the container is not running any more, which is what stopping wants anyway
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.container.kill(signal=name)


def resume_point(
    container: Any, stored: Sequence[tuple[float, str]], *, window: float = RESUME_WINDOW
) -> float | None:
    """Where a new reader of ``container``'s output goes on: after the last line already stored.

    ``stored`` is the tail of the task's log, (time received, line). Those times are the agent's,
    taken when it read a line, and a busy agent reads late: resuming after the last of them
    would skip what the container wrote meanwhile. So the container's own log up to that time
    (``window`` seconds of it at most) is matched against the stored lines, and the result is
    docker's timestamp of the last one found (a :attr:`DockerProcess.last_log_time`). None
    means from the start.
    """
    if not stored:
        return None
    received = stored[-1][0]
    start = max(0.0, received - window)
    until = received + _ROUNDING
    lines = [line for line in _lines(container, start, until + 1.0) if line[0] <= until]
    if not lines:
        return received  # it wrote nothing the agent could have missed
    texts = [text for _, text in stored if not text.startswith("[overnight]")][-_MATCHED:]
    for count in sorted({len(texts), 1}, reverse=True) if texts else ():
        want = texts[-count:]  # the last lines stored, then the last one alone
        for end in range(len(lines), count - 1, -1):  # the latest place they match
            if [text for _, text in lines[end - count : end]] == want:
                return lines[end - 1][0]
    return start or None  # none of its output is stored yet: all of it again


def _lines(container: Any, since: float, until: float) -> list[tuple[float, str]]:
    """The container's log lines between two moments, each with docker's time of its end."""
    assembler = LineAssembler()
    lines: list[tuple[float, str]] = []
    moment = since
    try:
        stream = container.logs(
            stream=True, follow=False, timestamps=True, since=since or None, until=until
        )
        try:
            for chunk in stream:
                stamp, _, data = chunk.partition(b" ")
                moment = parse_timestamp(stamp)
                lines.extend(assembler.feed(data, moment))
        finally:
            _close(stream)
    except _STREAM_ERRORS:
        return lines
    return lines + assembler.finish(moment)


def _close(stream: Any) -> None:
    """Close a log stream; closing its response too keeps the socket from leaking a warning."""
    with contextlib.suppress(*_STREAM_ERRORS):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        response.close()


def parse_timestamp(stamp: bytes) -> float:
    """Docker's RFC 3339 UTC timestamp with nanoseconds (``2024-05-01T10:00:00.123456789Z``)."""
    text = stamp.decode("ascii", "replace").rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return time.time()
    return seconds + float(f"0.{fraction or '0'}")
