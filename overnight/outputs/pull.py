"""Bringing a task's outputs home: each file of its manifest written under a folder.

Nothing read from Redis is trusted: a manifest's path that could leave the folder is refused
(the manifest refuses it when read, and the final path is checked again against the folder), a
file is written to a temporary name beside its place and renamed only once its bytes hashed to
the manifest's digest, and a file already there with that digest is not fetched again, so a pull
that was interrupted resumes by running it again. A pull killed mid-file (SIGKILL, a power cut)
leaves its temporary file behind: the next pull removes those it finds in the folders its files go
to, before it fetches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from overnight.errors import OutputError
from overnight.outputs.manifest import Manifest, OutputEntry, path_fault
from overnight.outputs.store import CHUNK, OutputStore

PART_SUFFIX = ".overnight-part"
"""What a file being pulled is called until it is complete."""

Progress = Callable[[OutputEntry, int], None]
"""Called with an entry and the bytes of it written since the last call."""


@dataclasses.dataclass
class PullReport:
    """What a pull did, file by file (tree-relative paths)."""

    fetched: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # identical here already
    failed: list[str] = dataclasses.field(default_factory=list)  # "path: why", refused included
    cleaned: list[str] = dataclasses.field(default_factory=list)  # an interrupted pull's parts


def pull(
    store: OutputStore, manifest: Manifest, dest: Path, progress: Progress | None = None
) -> PullReport:
    """Write the manifest's files under ``dest``; a file that fails is reported, not raised."""
    report = PullReport(failed=list(manifest.refused))
    root = dest.absolute()
    root.mkdir(parents=True, exist_ok=True)
    folders = {tuple(e.path.split("/")[:-1]) for e in manifest.entries if not path_fault(e.path)}
    for folder in sorted(folders):
        report.cleaned.extend(_remove_parts(root, folder))
    for entry in manifest.entries:
        try:
            target = _target(root, entry.path)
            if _identical(target, entry):
                report.skipped.append(entry.path)
                if progress is not None:
                    progress(entry, entry.size)
                continue
            _fetch(store, entry, target, progress)
            report.fetched.append(entry.path)
        except (OSError, OutputError) as exc:
            report.failed.append(f"{entry.path}: {exc}")
    return report


def _target(root: Path, path: str) -> Path:
    """Where ``path`` goes under ``root``; refuses one that would land elsewhere."""
    fault = path_fault(path)
    if fault:
        raise OutputError(fault)
    parts = path.split("/")
    folder = root
    for part in [*parts[:-1], None]:
        if part is not None:
            folder = folder / part
        # a link below the folder (one the user made) would take the file elsewhere
        if (folder != root and folder.is_symlink()) or (folder / parts[-1]).is_symlink():
            raise OutputError(
                f"refused: {path!r} would be written outside {root} through a symbolic link"
            )
        folder.mkdir(exist_ok=True)
    return folder / parts[-1]


def _remove_parts(root: Path, folder: tuple[str, ...]) -> list[str]:
    """Remove the temporary files of an interrupted pull from ``root/folder``, reached without
    following a symbolic link; their paths under ``root``."""
    removed: list[str] = []
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return removed
    try:
        for part in folder:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                return removed  # not there yet, or not a folder of ours: nothing left in it
            os.close(fd)
            fd = inner
        with os.scandir(fd) as found:
            names = [e.name for e in found if e.name.endswith(PART_SUFFIX) and e.is_file()]
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            removed.append("/".join((*folder, name)))
    finally:
        os.close(fd)
    return removed


def _identical(target: Path, entry: OutputEntry) -> bool:
    try:
        if not target.is_file() or target.stat().st_size != entry.size:
            return False
        with target.open("rb") as handle:
            sha = hashlib.sha256()
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
    except OSError:
        return False
    return sha.hexdigest() == entry.digest


def _fetch(store: OutputStore, entry: OutputEntry, target: Path, progress: Progress | None) -> None:
    partial = target.with_name(target.name + PART_SUFFIX)
    sha = hashlib.sha256()
    try:
        # O_NOFOLLOW: a link planted at the temporary name is not written through
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            for chunk in store.read(entry.digest):
                sha.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(entry, len(chunk))
        if sha.hexdigest() != entry.digest:
            raise OutputError(
                f"its bytes from {store.url} hash to {sha.hexdigest()[:12]}, not "
                f"{entry.digest[:12]}; the store is damaged"
            )
        os.replace(partial, target)
        os.utime(target, (entry.mtime, entry.mtime))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
