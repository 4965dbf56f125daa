"""A task running in a Docker container, seen through the :class:`Process` interface.

A :class:`DockerProcess` holds nothing but the container: one made for an existing container
(after an agent restart) behaves like the one :meth:`DockerEnvironment.start` returned, and
``since`` resumes its output after the last chunk already read.
"""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import requests.exceptions

from overnight.agent.environments.base import Process

_STREAM_ERRORS = (requests.exceptions.RequestException, docker.errors.APIError, OSError)
_DONE = ("exited", "dead")


class DockerProcess(Process):
    """A container started by overnight; ``ident`` is its id.

    ``since`` (unix seconds, as :attr:`last_log_time` gave it) skips output up to and including
    that moment, so a new process for the same container continues where the old one stopped.
    """

    def __init__(self, container: Any, *, since: float | None = None) -> None:
        self.container = container
        self.last_log_time: float | None = since  # docker's timestamp of the last chunk read
        self._exit_code: int | None = None

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
            if self.poll() is not None:
                return
            time.sleep(0.2)

    def poll(self) -> int | None:
        if self._exit_code is not None:
            return self._exit_code
        try:
            self.container.reload()
        except _STREAM_ERRORS:
            return None  # removed, or the engine does not answer right now
        state = self.container.attrs["State"]
        if state.get("Status") in _DONE:
            self._exit_code = int(state.get("ExitCode", -1))
        return self._exit_code

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return self.poll()
            try:
                result = self.container.wait(timeout=left)
            except docker.errors.NotFound:
                return self._exit_code
            except _STREAM_ERRORS:
                if self.poll() is not None:
                    return self._exit_code
                if deadline is None or deadline > time.monotonic():
                    time.sleep(0.2)  # the connection broke, not a timeout: ask again
                continue
            self._exit_code = int(result["StatusCode"])
            return self._exit_code

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
