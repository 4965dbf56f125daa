"""The venv cache on an agent's disk: one venv per key, shared safely by agents on one host.

Layout under the cache directory::

    envs/<key>/            a finished venv, with its build record overnight-env.json
    locks/<key>.build      exclusive while the venv for <key> is being built
    locks/<key>.use        shared while a task prepares or runs in it; its mtime is last use
    tmp/<key>.<random>/    a venv being built, renamed into envs/ when complete
    trash/                 evicted venvs being deleted
    uv-cache/              uv's download and wheel cache, so rebuilds are fast

Eviction takes ``<key>.use`` exclusively without waiting, so a venv that any task (in any
process) is preparing or running in is never removed; the kernel frees those locks when a
process dies, so a crash leaves nothing stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from overnight.agent.workspace.locks import FileLock

RECORD = "overnight-env.json"


@dataclasses.dataclass(frozen=True)
class EnvRecord:
    """How a cached venv was built: what went in, and what it took."""

    key: str
    python: str  # major.minor.micro of the interpreter the venv was made from
    interpreter: str  # that interpreter's path
    requirements: str  # normalized requirements text
    uv_version: str
    packages: tuple[str, ...] = ()  # name==version as installed
    created: float = 0.0
    build_seconds: float = 0.0
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["packages"] = list(self.packages)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields["packages"] = tuple(fields.get("packages", ()))
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    key: str
    last_used: float
    size_bytes: int


class VenvCache:
    """Paths, locks, build records and eviction for the venvs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.envs = root / "envs"
        self.locks = root / "locks"
        self.tmp = root / "tmp"
        self.trash = root / "trash"
        self.uv_cache = root / "uv-cache"
        for folder in (self.envs, self.locks, self.tmp, self.trash, self.uv_cache):
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.envs / key

    def use_lock(self, key: str, *, shared: bool = True) -> FileLock:
        return FileLock(self.locks / f"{key}.use", shared=shared)

    def build_lock(self, key: str) -> FileLock:
        return FileLock(self.locks / f"{key}.build")

    def record(self, key: str) -> EnvRecord | None:
        """The build record of a complete venv for ``key``, or None when there is none."""
        try:
            data = json.loads((self.path(key) / RECORD).read_text())
            return EnvRecord.from_dict(data)
        except (OSError, ValueError, TypeError):
            return None

    def touch(self, key: str) -> None:
        """Mark ``key`` as used now, for least-recently-used eviction."""
        (self.locks / f"{key}.use").touch()

    def new_build_dir(self, key: str) -> Path:
        """A fresh folder to build ``key`` in; call with its build lock held.

        Leftovers of builds of this key that died halfway are removed first.
        """
        for stale in self.tmp.glob(f"{key}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        return self.tmp / f"{key}.{uuid.uuid4().hex[:8]}"

    def commit(self, key: str, built: Path, record: EnvRecord) -> None:
        """Write the record into ``built`` and move it into place in one rename."""
        (built / RECORD).write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        final = self.path(key)
        if final.exists():  # an incomplete venv without a record: replace it
            self._discard(final)
        os.rename(built, final)

    def entries(self) -> list[CacheEntry]:
        """Every complete venv, least recently used first."""
        out = []
        for folder in self.envs.iterdir():
            record = self.record(folder.name)
            if record is None:
                continue
            try:
                used = (self.locks / f"{folder.name}.use").stat().st_mtime
            except OSError:
                used = record.created
            out.append(CacheEntry(folder.name, used, record.size_bytes))
        return sorted(out, key=lambda e: e.last_used)

    def remove(self, key: str) -> bool:
        """Delete the venv for ``key`` unless some task is using it; True when it was removed."""
        lock = self.use_lock(key, shared=False)
        if not lock.try_acquire():
            return False
        try:
            if not self.path(key).exists():
                return False
            self._discard(self.path(key))
            return True
        finally:
            lock.release()

    def evict(
        self, *, max_envs: int, max_gb: float | None, keep: Collection[str] = ()
    ) -> list[str]:
        """Remove least recently used venvs (not in ``keep``, not in use) until within limits."""
        entries = self.entries()
        count, total = len(entries), sum(e.size_bytes for e in entries)
        limit = None if max_gb is None else max_gb * 1024**3
        removed = []
        for entry in entries:
            if count <= max_envs and (limit is None or total <= limit):
                break
            if entry.key in keep or not self.remove(entry.key):
                continue
            removed.append(entry.key)
            count, total = count - 1, total - entry.size_bytes
        self.empty_trash()
        return removed

    def empty_trash(self) -> None:
        for item in self.trash.iterdir():
            shutil.rmtree(item, ignore_errors=True)

    def _discard(self, folder: Path) -> None:
        target = self.trash / f"{folder.name}.{uuid.uuid4().hex[:8]}"
        os.rename(folder, target)  # atomic: no one sees a half-deleted venv
        shutil.rmtree(target, ignore_errors=True)


def tree_size(folder: Path) -> int:
    """Bytes in the files under ``folder`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
