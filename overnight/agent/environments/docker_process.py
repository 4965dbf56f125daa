"""A task running in a Docker container, seen through the :class:`Process` interface.

A :class:`DockerProcess` holds nothing but the container: one made for an existing container
(after an agent restart) behaves like the one :meth:`DockerEnvironment.start` returned, and
``since`` resumes its output after the last chunk already read.
"""

from __future__ import annotations

import calendar
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import requests.exceptions

from overnight.agent.environments.base import Process

_STREAM_ERRORS = (requests.exceptions.RequestException, docker.errors.APIError, OSError)


class DockerProcess(Process):
    """A container started by overnight; ``ident`` is its id.

    ``since`` (unix seconds, as :attr:`last_log_time` gave it) skips output up to and including
    that moment, so a new process for the same container continues where the old one stopped.
    """

    def __init__(self, container: Any, *, since: float | None = None) -> None:
        self.container = container
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
                        moment = _parse_timestamp(stamp)
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
        self._ended.set()

    def terminate(self) -> None:
        self._signal("SIGTERM")

    def kill(self) -> None:
        self._signal("SIGKILL")

    def remove(self) -> None:
        """Delete the container; call once its output and exit code are saved."""
        with contextlib.suppress(docker.errors.NotFound):
            self.container.remove(force=True, v=True)

    def _signal(self, name: str) -> None:
        # 409: the container is not running any more, which is what stopping wants anyway
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.container.kill(signal=name)


def _close(stream: Any) -> None:
    """Close a log stream; closing its response too keeps the socket from leaking a warning."""
    with contextlib.suppress(*_STREAM_ERRORS):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        response.close()


def _parse_timestamp(stamp: bytes) -> float:
    """Docker's RFC 3339 UTC timestamp with nanoseconds (``2024-05-01T10:00:00.123456789Z``)."""
    text = stamp.decode("ascii", "replace").rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return time.time()
    return seconds + float(f"0.{fraction or '0'}")
