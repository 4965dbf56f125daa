"""A task's output files, collected from its tree into the output store while and after it runs.

What is collected: everything under the task's output folder (:data:`OUTPUT_DIR`, given to the
task as ``OVERNIGHT_OUTPUT_DIR``) and the files the spec's ``outputs`` globs match, relative to
the tree (a glob naming a folder takes what is in it). Only files whose size or mtime changed since
the last sync are read; only digests the store lacks travel. Symlinks are never followed and
``.git`` folders never entered: the walk goes through directory descriptors, so a task cannot
swap a folder for a link to somewhere else while the agent reads. Whatever goes wrong (a file
unreadable, vanishing or changing, a store down or full, the per-task cap) is a note in the
task's manifest naming the file and why, never a change of the task's status; the next sync
tries again. A store found down is tried once per sync: the other files are noted at once.

A task that runs again (requeued, lost with retries left, or made by ``overnight retry --resume``,
which gives the new task the first one's manifest) has its stored outputs written back into its
fresh tree before it starts (:meth:`OutputCollector.restore`), through :func:`overnight.outputs.pull.pull`:
the manifest is untrusted, so a path that is absolute, climbs out through ``..``, reaches into
``.git`` or passes a symbolic link of the rebuilt tree is refused, never written.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import redis

from overnight.errors import OutputError, OutputStoreDown
from overnight.outputs import manifest
from overnight.outputs.pull import PullReport, pull
from overnight.outputs.store import CHUNK, OutputStore
from overnight.units import format_bytes

log = logging.getLogger(__name__)

VANISHED = (
    "vanished while the outputs were synced (deleted or renamed after its folder was listed); "
    "stored if it is there at the next sync"
)
OUTPUT_DIR = "outputs"
"""The folder inside each task's tree that is always collected (``OVERNIGHT_OUTPUT_DIR``)."""


@dataclasses.dataclass
class SyncReport:
    """What one sync did."""

    stored: int = 0  # files recorded in the manifest now (new or changed)
    uploaded: int = 0  # of those, blobs the store lacked
    not_kept: int = 0  # files noted instead


class OutputCollector:
    """Syncs one run's outputs; the periodic syncs and the final one share what it has seen."""

    def __init__(
        self,
        store: OutputStore,
        client: redis.Redis,
        *,
        task_id: str,
        attempt: int,
        tree: Path,
        patterns: Sequence[str],
        cap_bytes: int | None,
    ) -> None:
        self.store = store
        self.redis = client
        self.task_id = task_id
        self.attempt = attempt
        self.tree = tree
        self.patterns = [tuple(p.strip("/").split("/")) for p in (OUTPUT_DIR, *patterns)]
        self.globs = tuple(patterns)
        self.cap = cap_bytes
        self._seen: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) stored
        self._sizes: dict[str, int] | None = None  # path -> size of what the manifest keeps
        self._noted: set[str] = set()  # paths noted in this sync
        self._down: str | None = None  # why the store could not be reached in this sync
        self._lock = threading.Lock()  # one sync at a time: periodic and final never overlap

    def restore(self) -> PullReport | None:
        """Write the task's stored outputs into its tree (before its run starts); None when it
        has none. What was restored is not read again at the next sync unless it changes."""
        with self._lock:
            found = manifest.read(self.redis, self.task_id)
            if not found.entries and not found.refused:
                return None
            report = pull(self.store, found, self.tree)
            self._sizes = {e.path: e.size for e in found.entries}
            for path in (*report.fetched, *report.skipped):
                try:
                    info = os.stat(self.tree / path, follow_symlinks=False)
                except OSError:
                    continue
                self._seen[path] = (info.st_size, info.st_mtime_ns)
            return report

    def sync(self, *, final: bool = False) -> SyncReport:
        """Store what changed; never raises (a failure is logged and noted where it can be)."""
        with self._lock:
            report = SyncReport()
            try:
                self._sync(report, final)
            except Exception as exc:  # Redis away, a bug: the run goes on, the next sync retries
                log.warning("task %s: outputs not synced: %s", self.task_id, exc)
            return report

    def _sync(self, report: SyncReport, final: bool) -> None:
        if self._sizes is None:
            known = manifest.read(self.redis, self.task_id)
            self._sizes = {e.path: e.size for e in known.entries}
        self._noted.clear()
        self._down = None
        matched = [False] * len(self.patterns)
        for path, dir_fd, name in self._walk(matched):
            self._collect(path, dir_fd, name, report)
        if final:
            for pattern, hit in zip(self.globs, matched[1:], strict=True):
                if not hit:
                    self._note(pattern, "the pattern matched no file")
                elif pattern not in self._noted:  # else a file of that very name was noted
                    manifest.clear_note(self.redis, self.task_id, pattern)

    def _walk(self, matched: list[bool]) -> Iterator[tuple[str, int, str]]:
        """(tree-relative path, its folder's descriptor, its name) of each file to collect."""
        if not self.tree.is_dir():
            return
        for folder, dirs, files, dir_fd in os.fwalk(self.tree, follow_symlinks=False):
            rel = os.path.relpath(folder, self.tree)
            parts = () if rel == "." else tuple(rel.split("/"))
            dirs[:] = [d for d in dirs if d.lower() != ".git" and self._may_hold((*parts, d))]
            for name in sorted(files):
                path_parts = (*parts, name)
                hits = [i for i, p in enumerate(self.patterns) if _matches(path_parts, p)]
                if not hits:
                    continue
                for i in hits:
                    matched[i] = True
                yield "/".join(path_parts), dir_fd, name

    def _may_hold(self, parts: tuple[str, ...]) -> bool:
        return any(_may_hold(parts, p) for p in self.patterns)

    def _collect(self, path: str, dir_fd: int, name: str, report: SyncReport) -> None:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self._not_kept(path, VANISHED, report)
            return
        if stat.S_ISLNK(info.st_mode):
            self._note(path, "a symbolic link: links are not followed; write the file itself")
            return
        if not stat.S_ISREG(info.st_mode):
            return
        if self._seen.get(path) == (info.st_size, info.st_mtime_ns):
            return
        assert self._sizes is not None
        if self.cap is not None:
            total = sum(self._sizes.values()) - self._sizes.get(path, 0) + info.st_size
            if total > self.cap:
                self._not_kept(
                    path,
                    f"not kept: {format_bytes(info.st_size)} would take the task's outputs past "
                    f"max_output_mb ({format_bytes(self.cap)}); set the agent's output_store "
                    "to a file:// or sftp:// store for large files, or raise max_output_mb",
                    report,
                )
                return
        if self._down is not None:  # one try per sync: a store that is down costs no wait
            self._not_kept(path, f"not stored: {self._down}; retried at the next sync", report)
            return
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            self._not_kept(path, VANISHED, report)
            return
        except OSError as exc:
            reason = f"unreadable: {exc.strerror or exc}; stored once it can be read"
            self._not_kept(path, reason, report)
            return
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                return
            digest = _hash(fd)
            manifest.claim(self.redis, self.task_id, digest)  # before exists(): gc keeps it
            if not self.store.exists(digest):
                os.lseek(fd, 0, os.SEEK_SET)
                self.store.write(digest, _chunks(fd))
                report.uploaded += 1
        except (OSError, OutputError) as exc:
            if isinstance(exc, OutputStoreDown):
                self._down = str(exc)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._not_kept(path, f"not stored: {reason}; retried at the next sync", report)
            return
        finally:
            os.close(fd)
        entry = manifest.OutputEntry(
            path=path,
            digest=digest,
            size=opened.st_size,
            mtime=opened.st_mtime,
            stored=round(time.time(), 3),
            attempt=self.attempt,
            store=self.store.url,
        )
        manifest.record(self.redis, self.task_id, entry)
        self._seen[path] = (opened.st_size, opened.st_mtime_ns)
        self._sizes[path] = opened.st_size
        report.stored += 1

    def _not_kept(self, path: str, reason: str, report: SyncReport) -> None:
        self._note(path, reason)
        report.not_kept += 1

    def _note(self, path: str, reason: str) -> None:
        self._noted.add(path)
        manifest.note(self.redis, self.task_id, path, reason, self.attempt)


class PeriodicSync:
    """Calls ``sync`` every ``interval`` seconds on a thread of its own until stopped."""

    def __init__(self, sync: Callable[[], object], interval: float) -> None:
        self._sync = sync
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="output-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop, waiting for a sync under way to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sync()


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether the path, or a folder above it, matches the glob (``**``: any folders)."""
    if not pattern:
        return True  # the pattern named a folder above the path
    if not parts:
        return all(p == "**" for p in pattern)
    head = pattern[0]
    if head == "**":
        return _matches(parts, pattern[1:]) or _matches(parts[1:], pattern)
    return fnmatch.fnmatchcase(parts[0], head) and _matches(parts[1:], pattern[1:])


def _may_hold(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether files below the folder ``parts`` could match the glob (prunes the walk)."""
    for index, part in enumerate(parts):
        if index >= len(pattern):
            return True  # the folder is inside one the pattern named
        if pattern[index] == "**":
            return True
        if not fnmatch.fnmatchcase(part, pattern[index]):
            return False
    return True


def _hash(fd: int) -> str:
    sha = hashlib.sha256()
    for chunk in _chunks(fd):
        sha.update(chunk)
    return sha.hexdigest()


def _chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, CHUNK):
        yield chunk
