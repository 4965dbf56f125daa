"""MetricFiles: the metrics files a task declared (``enqueue --metrics``), read as they grow.

Each file is a CSV file with a header row or a file of JSON lines (one object per line), told
apart by its first line (``{`` starts JSON lines). Every poll reads what was appended since the
last one, at most ``read_bytes`` a file; a last line without its newline waits for the next poll
(the final poll takes it). A file that shrank or was replaced is read again from its start.

The paths come from the task's spec, which the agent does not trust: each is opened relative to
the task's tree one folder at a time, never following a symbolic link, so no path or link a
task makes can have the agent read a file outside the tree. A file that is missing (not written
yet) is tried again at the next poll; one that cannot be read is reported once through ``warn``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from overnight.metrics.parse import parse_fields
from overnight.metrics.tracker import MetricTracker

MAX_ROW = 64 * 1024
"""Longest line of a metrics file, in bytes; longer ones are passed over."""
MAX_COLUMNS = 1000
"""Columns of a CSV header read at most."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


@dataclasses.dataclass
class _Tail:
    """Where the reading of one file stands."""

    identity: tuple[int, int] | None = None  # (device, inode) of the file read so far
    offset: int = 0
    held: bytes = b""  # the start of a line whose newline has not come yet
    skipping: bool = False  # inside a line past MAX_ROW: passed over up to its newline
    header: list[str] | None = None  # a CSV file's columns
    json_lines: bool | None = None  # None: its first line is still to come
    warned: bool = False


class MetricFiles:
    """Polls the files at ``paths`` (relative to ``tree``) into ``tracker``."""

    def __init__(
        self,
        tracker: MetricTracker,
        tree: Path,
        paths: Sequence[str],
        *,
        warn: Callable[[str], None] = lambda message: None,
        read_bytes: int = 1024 * 1024,
    ) -> None:
        self.tracker = tracker
        self.tree = tree
        self.paths = tuple(paths)
        self._warn = warn
        self._read_bytes = read_bytes
        self._tails = {path: _Tail() for path in self.paths}

    def poll(self, *, final: bool = False) -> None:
        """Read what each file gained; never raises."""
        for path in self.paths:
            tail = self._tails[path]
            try:
                self._poll(path, tail, final)
            except Exception as exc:  # an unreadable file, a bug: the run goes on
                if not tail.warned:
                    tail.warned = True
                    with contextlib.suppress(Exception):
                        self._warn(f"metrics file {path} cannot be read: {exc}")

    def _poll(self, path: str, tail: _Tail, final: bool) -> None:
        fd = _open_inside(self.tree, path)
        if fd is None:
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            identity = (info.st_dev, info.st_ino)
            if identity != tail.identity or info.st_size < tail.offset:
                self._tails[path] = tail = _Tail(identity=identity, warned=tail.warned)
            os.lseek(fd, tail.offset, os.SEEK_SET)
            data = os.read(fd, self._read_bytes)
        finally:
            os.close(fd)
        tail.offset += len(data)
        lines = (tail.held + data).split(b"\n")
        tail.held = lines.pop()
        if final and tail.held:
            lines.append(tail.held)
            tail.held = b""
        for raw in lines:
            if tail.skipping:
                tail.skipping = False  # the end of a line dropped for its length
                continue
            if len(raw) <= MAX_ROW:
                self._row(tail, raw.decode("utf-8", errors="replace").strip())
        if len(tail.held) > MAX_ROW:
            tail.held, tail.skipping = b"", True

    def _row(self, tail: _Tail, text: str) -> None:
        if not text:
            return
        if tail.json_lines is None:
            tail.json_lines = text.startswith("{")
            if not tail.json_lines:
                tail.header = [c.strip() for c in _csv_cells(text)[:MAX_COLUMNS]]
                return
        if tail.json_lines:
            try:
                data = json.loads(text)
            except (ValueError, RecursionError):
                return
            reading = parse_fields(data) if isinstance(data, dict) else None
        else:
            assert tail.header is not None
            reading = parse_fields(
                dict(zip(tail.header, _csv_cells(text), strict=False)), text=True
            )
        if reading is not None:
            self.tracker.add(reading)


def _csv_cells(text: str) -> list[str]:
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return []


def _open_inside(tree: Path, path: str) -> int | None:
    """A descriptor of ``tree/path`` opened without following any link; None when missing."""
    parts = path.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise OSError(f"{path!r} is not a plain path inside the tree")
    try:
        fd = os.open(tree, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    try:
        for folder in parts[:-1]:
            inner = os.open(folder, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link where a folder or the file is
            raise OSError(
                f"{path} is (or passes through) a symbolic link: links are not followed"
            ) from exc
        raise
    finally:
        os.close(fd)
