"""Copies of a verified tree that share no file with it, and the fingerprint that tells whether
the tree changed since its build.

A task's copy is its own, git's object files too, so nothing a task does to its copy (appending
to a pack in place, handing the files to another uid) reaches the cached tree or the next task.
The fingerprint hashes the status of every path, change times included, which no user can set
back: :mod:`overnight.agent.workspace.workspaces` keeps it in a tree's ready mark and rebuilds a tree whose
copy saw another one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from overnight.errors import ReconstructError


def unshare(tree: Path) -> None:
    """Give ``tree`` its own copy of each file it shares with another path: a clone from a local
    mirror hard-links the mirror's packs, and the mirror's next clone or repack would otherwise
    change them (their link count and change time) under every tree built from it."""
    for folder, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                own = f"{path}.own"
                shutil.copyfile(path, own)
                os.chmod(own, stat.S_IMODE(info.st_mode))
                os.replace(own, path)


def copy_tree(source: Path, dest: Path) -> str:
    """Copy a checkout as git writes one, symlinks as symlinks, and return the fingerprint of
    ``source`` (see :func:`fingerprint`) as the copy saw it.

    Every file is the copy's own, git's object files too: a task that writes to a pack file in
    place (or whose files are handed to another uid) changes nothing for the next task. Files
    and folders are made with the agent's default modes (what a checkout would give them), but
    exec bits and the read-only modes of object files are kept; times are not copied: a fresh
    checkout's times are its own too.
    """
    top = str(source)
    seen: list[tuple[str, int, int, int, int, int]] = []
    try:
        os.mkdir(dest)
        folders = [(top, str(dest), False, False)]  # source, copy, in .git, in an object store
        while folders:
            src_dir, dst_dir, in_git, objects = folders.pop()
            with os.scandir(src_dir) as entries:
                for entry in entries:
                    src, dst = entry.path, os.path.join(dst_dir, entry.name)
                    info = entry.stat(follow_symlinks=False)
                    seen.append(_stat_row(os.path.relpath(src, top), info))
                    if stat.S_ISLNK(info.st_mode):
                        os.symlink(os.readlink(src), dst)
                    elif stat.S_ISDIR(info.st_mode):
                        os.mkdir(dst)
                        git_dir = in_git or (src_dir == top and entry.name == ".git")
                        store = entry.name == "objects" and in_git and _is_git_dir(src_dir)
                        folders.append((src, dst, git_dir, objects or store))
                    else:
                        shutil.copyfile(src, dst, follow_symlinks=False)
                        if objects or info.st_mode & 0o111:
                            os.chmod(dst, stat.S_IMODE(info.st_mode))
    except OSError as exc:
        rmtree(dest, missing_ok=True)
        raise ReconstructError(f"cannot copy the task's tree to {dest}: {exc}") from exc
    return _digest(seen)


def fingerprint(tree: Path) -> str:
    """A hash of the status of every path under ``tree``: its kind and mode, size, inode, and
    modification and change times.

    Writing, truncating, replacing, renaming, chmod, adding or removing anything there changes
    it: the change time (ctime) moves with every one of those and cannot be set back by a
    user, as modification times can. Reading does not change it.
    """
    top = str(tree)
    seen: list[tuple[str, int, int, int, int, int]] = []
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            seen.append(_stat_row(os.path.relpath(path, top), os.lstat(path)))
    return _digest(seen)


def _stat_row(rel: str, info: os.stat_result) -> tuple[str, int, int, int, int, int]:
    return (rel, info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def _digest(rows: list[tuple[str, int, int, int, int, int]]) -> str:
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()


def _is_git_dir(path: str) -> bool:
    """``.git`` or a submodule's git folder under ``.git/modules`` (it holds HEAD)."""
    return os.path.isfile(os.path.join(path, "HEAD"))


def rmtree(path: Path, *, missing_ok: bool = False) -> None:
    """Remove a tree, making read-only folders writable first (git objects, installed files)."""
    if missing_ok and not os.path.lexists(path):
        return

    def retry(func: Callable[[str], object], name: str, _: object) -> None:
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, os.stat(name).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
        func(name)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
