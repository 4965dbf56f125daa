"""The files git ignores in a working tree: never recorded, so never on the worker.

One ``git ls-files --others --ignored --directory`` lists them, a wholly ignored folder (``.venv/``,
``data/``) as one entry, so the listing stays quick whatever the folder holds. It is asked for only
when enqueue's account needs it, once.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

from overnight.errors import GitError
from overnight.recorder.gitrepo import Git, split_z

# Ignored everywhere and never what a run misses: counted, but not named as the biggest.
_NOISE_PARTS = frozenset(
    {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints", ".tox"}
)
_NOISE_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".egg-info/", ".DS_Store")


@dataclass(frozen=True)
class IgnoredEntry:
    """An ignored file (its size) or wholly ignored folder (its path ends with ``/``, size None)."""

    path: str
    size: int | None


@dataclass
class IgnoredFiles:
    """The ignored paths of the repository ``git`` runs in, listed on first use."""

    git: Git
    _entries: list[IgnoredEntry] | None = field(default=None, init=False, repr=False)

    @property
    def entries(self) -> list[IgnoredEntry]:
        if self._entries is None:
            self._entries = _list(self.git)
        return self._entries

    def biggest(self, count: int) -> list[IgnoredEntry]:
        """Up to ``count`` entries worth naming: ignored folders first (their size is not
        measured: walking ``.venv/`` would cost more than the whole snapshot), then the largest
        files; caches and bytecode are left out."""
        named = [e for e in self.entries if not _noise(e.path)]
        folders = sorted((e for e in named if e.size is None), key=lambda e: e.path)
        files = heapq.nlargest(count, (e for e in named if e.size is not None), key=_size)
        return [*folders, *files][:count]


def _size(entry: IgnoredEntry) -> int:
    return entry.size or 0


def _noise(path: str) -> bool:
    parts = path.rstrip("/").split("/")
    return bool(_NOISE_PARTS & set(parts)) or path.endswith(_NOISE_SUFFIXES)


def _list(git: Git) -> list[IgnoredEntry]:
    try:
        out = git.run(
            "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"
        )
    except GitError:
        return []  # the account is a courtesy: a listing that fails leaves it without the figure
    entries: list[IgnoredEntry] = []
    for path in split_z(out):
        if path.endswith("/"):
            entries.append(IgnoredEntry(path, None))
            continue
        try:
            entries.append(IgnoredEntry(path, os.lstat(git.cwd / path).st_size))
        except OSError:
            continue  # removed while we looked
    return entries
