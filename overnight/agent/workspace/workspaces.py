"""Task workspaces on an agent: a shared mirror per repo, a verified tree per snapshot, and a
fresh copy of it per task.

``root/mirrors/<repo>.git`` holds each remote's branches and tags; a commit already there costs no
network at all, otherwise only the missing objects are fetched. The first task of a snapshot
rebuilds its tree once into ``root/trees/<key>`` with :func:`overnight.recorder.checkout.reconstruct`
(which checks it against the recorded tree id); every task then gets ``root/tasks/<task_id>``, a
copy of that tree: its own git checkout, with the recorded change uncommitted as on the laptop.
The copy costs no git command at all, so the tasks of a sweep start fast. Every file is copied,
git's object files too, so nothing a task does to its copy reaches the tree or the next task; and
a tree whose files changed since its build (its fingerprint, kept in its ready mark, differs) is
rebuilt rather than copied. Mirrors and trees are shared by every agent on the host under file
locks (exclusive to build, shared to read); beyond ``max_trees`` trees and ``max_mirrors``
mirrors the least recently used go. A task's copy is made and removed under a shared lock too,
which :mod:`overnight.agent.service.leftovers` takes exclusively to remove the copies killed agents left.
A copy made by an agent that keeps workspaces is marked kept (``root/kept/<task_id>``, written
before the copy is made), so that no agent sharing the folder, nor a later one without
``keep_workspaces``, ever removes it as a leftover.

Remotes are reached with the agent's own credentials, never prompting (:mod:`.remotes`). A cancel
stops a task's preparation while it fetches or waits for another agent's fetch or build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from overnight.agent.progress import StopCheck
from overnight.agent.workspace.locks import FileLock
from overnight.agent.workspace.remotes import GitCredentials, fetch
from overnight.agent.workspace.treecopy import copy_tree, fingerprint, rmtree, unshare
from overnight.errors import PreparationCanceled, ReconstructError
from overnight.recorder.checkout import reconstruct
from overnight.recorder.gitrepo import Git
from overnight.recorder.urls import require_network_url
from overnight.spec import Snapshot

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
MAX_TREES = 8  # verified trees kept per host, least recently used evicted first
MAX_MIRRORS = 20  # repository mirrors kept per host, likewise
TREE_FORMAT = 2  # 2: the ready mark holds the tree's fingerprint, copies link no object files


class Workspaces:
    """Mirrors, verified trees and per-task copies under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        credentials: GitCredentials | None = None,
        keep: bool = False,
        fetch_timeout: float = 1800.0,
        lock_timeout: float | None = None,
        max_trees: int = MAX_TREES,
        max_mirrors: int = MAX_MIRRORS,
        allow_local_repos: bool = True,
    ) -> None:
        self.root = Path(root)
        self.allow_local_repos = allow_local_repos  # False: network repo and submodule URLs only
        self.credentials = credentials or GitCredentials()
        self.keep = keep
        self.fetch_timeout = fetch_timeout
        self.lock_timeout = lock_timeout
        self.max_trees = max(1, max_trees)
        self.max_mirrors = max(1, max_mirrors)

    @property
    def mirrors(self) -> Path:
        return self.root / "mirrors"

    @property
    def trees(self) -> Path:
        return self.root / "trees"

    def task_dir(self, task_id: str) -> Path:
        if not _TASK_ID.match(task_id):
            raise ReconstructError(f"task id {task_id!r} cannot name a workspace folder")
        return self.root / "tasks" / task_id

    def mirror_dir(self, url: str) -> Path:
        """The mirror folder for ``url``: a readable name plus a hash of the whole URL."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1])
        name = name.removesuffix(".git")[:40] or "repo"
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        return self.mirrors / f"{name}-{digest}.git"

    def tree_dir(self, snapshot: Snapshot) -> Path:
        """Where the verified tree of ``snapshot`` is kept: a hash of all that defines it."""
        return self.trees / tree_key(snapshot)

    def create(
        self,
        task_id: str,
        snapshot: Snapshot,
        log: Callable[[str], None],
        should_stop: StopCheck = lambda: False,
    ) -> Path:
        """A fresh tree for the task at ``root/tasks/<task_id>``; raises ReconstructError.

        Raises PreparationCanceled when ``should_stop()`` turns true while git fetches or while
        another task holds the tree's or the mirror's lock.
        """
        url = snapshot.spec.repo.url
        if url and not self.allow_local_repos:  # before any fetch
            require_network_url(url, "repo.url")
        with self._locked(
            self._task_lock(task_id), should_stop, "removed leftover trees", shared=True
        ):
            return self._create(task_id, snapshot, log, should_stop)

    def _create(
        self, task_id: str, snapshot: Snapshot, log: Callable[[str], None], should_stop: StopCheck
    ) -> Path:
        dest = self.task_dir(task_id)
        if self.keep:
            mark = self.kept_mark(task_id)
            mark.parent.mkdir(exist_ok=True)
            mark.touch()
        else:
            self.kept_mark(task_id).unlink(missing_ok=True)  # the copy is this run's now
        if dest.exists():
            log(f"removing the workspace left by an earlier attempt at {dest}")
            rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        tree = self.tree_dir(snapshot)
        lock = self.trees / "locks" / f"{tree.name[:2]}.lock"
        with self._locked(lock, should_stop, "rebuilt the same tree", shared=True):
            reused = self._reuse(tree, dest, log)
        if not reused:
            with self._locked(lock, should_stop, "rebuilt the same tree"):
                reused = self._reuse(tree, dest, log)
                if not reused:
                    built = self._build(tree, snapshot, log, should_stop)
                    if copy_tree(tree, dest) != built:
                        rmtree(dest)
                        raise ReconstructError(
                            f"the tree rebuilt at {tree} changed while it was copied; check "
                            "what else writes under the agent's workspace folder"
                        )
            if not reused:
                self._evict(keep=tree)
        spec = snapshot.spec
        parts = [f"commit {spec.repo.commit[:7]}"]
        if spec.patch:
            parts.append(f"patch of {spec.patch.size} bytes")
        if spec.bundle:
            parts.append("unpushed commits from the bundle")
        if spec.submodule_patches:
            parts.append(f"changes in {len(spec.submodule_patches)} submodule(s)")
        how = "a copy of the tree rebuilt for an earlier task" if reused else "rebuilt"
        elapsed = time.monotonic() - started
        log(f"workspace ready at {dest}: {', '.join(parts)}; {how} ({elapsed:.1f} s)")
        return dest

    def remove(self, task_id: str) -> None:
        """Delete the task's tree; kept when the agent keeps workspaces."""
        if self.keep:
            return
        dest = self.task_dir(task_id)
        with FileLock(self._task_lock(task_id), shared=True):
            if dest.exists():
                rmtree(dest)

    def kept_mark(self, task_id: str) -> Path:
        """The file that says an agent keeping workspaces made the task's copy."""
        self.task_dir(task_id)  # refuses an id that cannot name a folder
        return self.root / "kept" / task_id

    def task_ids(self) -> list[str]:
        """The tasks that have a tree under ``root/tasks``, by id."""
        try:
            entries = list(os.scandir(self.root / "tasks"))
        except FileNotFoundError:
            return []
        found = (e.name for e in entries if e.is_dir(follow_symlinks=False))
        return sorted(name for name in found if _TASK_ID.match(name))

    def remove_unused(self, task_id: str, unused: Callable[[str], bool]) -> bool:
        """Delete the task's tree if ``unused(task_id)``; True when it was removed.

        ``unused`` is asked while no agent on the host creates or removes a tree of a task
        that shares the lock (a task claimed just before this call has its tree kept), and not
        at all when the agent keeps workspaces, another agent holds the lock or an agent that
        keeps workspaces made the copy (:meth:`kept_mark`).
        """
        dest = self.task_dir(task_id)
        lock = FileLock(self._task_lock(task_id))
        if self.keep or not lock.try_acquire():
            return False
        try:
            if self.kept_mark(task_id).exists() or not dest.is_dir() or not unused(task_id):
                return False
            rmtree(dest)
            return True
        finally:
            lock.release()

    def _task_lock(self, task_id: str) -> Path:
        """Shared while a task's tree is made or removed, exclusive to remove a leftover one."""
        self.task_dir(task_id)  # refuses an id that cannot name a folder
        return self.root / "task-locks" / f"{task_id[:2]}.lock"

    @contextlib.contextmanager
    def _locked(
        self, path: Path, should_stop: StopCheck, what: str, *, shared: bool = False
    ) -> Iterator[None]:
        """Hold ``path``'s lock; a cancel while waiting for it raises PreparationCanceled."""
        lock = FileLock(path, shared=shared, timeout=self.lock_timeout)
        if not lock.acquire(should_stop=should_stop):
            raise PreparationCanceled(f"canceled while another task {what}")
        try:
            yield
        finally:
            lock.release()

    def _reuse(self, tree: Path, dest: Path, log: Callable[[str], None]) -> bool:
        """Copy ``tree`` to ``dest`` if it was built completely and has not changed since.

        A tree whose files differ from what its build left (their fingerprint, see
        :func:`overnight.agent.workspace.treecopy.copy_tree`) is not used: its copy and its ready mark are removed, and the
        caller rebuilds it.
        """
        built = _ready(tree)
        if not built:
            return False
        if copy_tree(tree, dest) == built:
            return True
        rmtree(dest)
        _ready_mark(tree).unlink(missing_ok=True)
        log(f"the tree cached at {tree} changed since it was built; rebuilding it")
        return False

    def _build(
        self, tree: Path, snapshot: Snapshot, log: Callable[[str], None], should_stop: StopCheck
    ) -> str:
        """Rebuild the snapshot's tree at ``tree`` and return its fingerprint; the caller holds
        its lock exclusively."""
        for stale in [tree, *tree.parent.glob(f".{tree.name}.*.tmp")]:
            if stale.exists():  # a build that died half-way, or a tree being evicted
                rmtree(stale)
        _ready_mark(tree).unlink(missing_ok=True)
        tmp = tree.with_name(f".{tree.name}.{os.getpid()}.tmp")
        repo = snapshot.spec.repo
        # No hook samples from git's templates: fewer files to copy for every task.
        env = {**self.credentials.env(), "GIT_TEMPLATE_DIR": ""}
        if repo.url is None:
            log("the task has no remote: rebuilding from its bundle")
            reconstruct(snapshot, tmp, git_env=env, allow_local=self.allow_local_repos)
        else:
            mirror = self.mirror_dir(repo.url)
            mirror_lock = mirror.with_suffix(".lock")
            with self._locked(mirror_lock, should_stop, "updated the mirror", shared=True):
                ready = _has_commit(mirror, repo.commit, env)
            if ready:
                log(f"mirror of {repo.url} has {repo.commit[:7]}; nothing to fetch")
            else:
                with self._locked(mirror_lock, should_stop, "updated the mirror"):
                    self._update_mirror(repo.url, mirror, env, log, should_stop)
            with self._locked(mirror_lock, should_stop, "updated the mirror", shared=True):
                reconstruct(
                    snapshot,
                    tmp,
                    source=str(mirror),
                    git_env=env,
                    allow_local=self.allow_local_repos,
                )
                _used_mark(mirror).touch()
            self._evict_mirrors(keep=mirror)
        _trim(Git(tmp, extra_env=env))
        unshare(tmp)
        tmp.rename(tree)
        built = fingerprint(tree)
        _ready_mark(tree).write_text(built)
        return built

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used trees beyond ``max_trees``; never one in use."""
        _evict_unused(
            self.trees.glob("*.ready"),
            self.max_trees,
            keep,
            lambda tree: self.trees / "locks" / f"{tree.name[:2]}.lock",
        )

    def _evict_mirrors(self, keep: Path) -> None:
        """Remove the least recently used mirrors beyond ``max_mirrors``; never one in use."""
        _evict_unused(
            self.mirrors.glob("*.git.used"),
            self.max_mirrors,
            keep,
            lambda mirror: mirror.with_suffix(".lock"),
        )

    def _update_mirror(
        self,
        url: str,
        mirror: Path,
        env: Mapping[str, str],
        log: Callable[[str], None],
        should_stop: StopCheck,
    ) -> None:
        git = Git(mirror, extra_env=env, timeout=self.fetch_timeout)
        if mirror.is_dir() and not git.ok("rev-parse", "--is-bare-repository"):
            log(f"mirror {mirror} is damaged; cloning it again")
            rmtree(mirror)
        if not mirror.is_dir():
            log(f"cloning {url} into the mirror cache")
            tmp = mirror.with_name(f".{mirror.name}.{os.getpid()}.tmp")
            if tmp.exists():
                rmtree(tmp)
            tmp.mkdir(parents=True)
            staging = git.at(tmp)
            staging.run("init", "--quiet", "--bare")
            staging.run("remote", "add", "origin", url)
            staging.run("config", "--unset-all", "remote.origin.fetch")
            for spec in _REFSPECS:
                staging.run("config", "--add", "remote.origin.fetch", spec)
            try:
                fetch(staging, url, should_stop)
            except BaseException:
                rmtree(tmp)
                raise
            tmp.rename(mirror)
            return
        log(f"fetching {url} into its mirror")
        fetch(git, url, should_stop)


def tree_key(snapshot: Snapshot) -> str:
    """A hash of everything the rebuilt tree depends on: the repo state, the patch, the bundle,
    the submodules' patches, and how the tree is kept (``TREE_FORMAT``)."""
    spec = snapshot.spec
    parts = {
        "format": TREE_FORMAT,
        "repo": dataclasses.asdict(spec.repo),
        "patch": spec.patch.sha256 if spec.patch else None,
        "bundle": spec.bundle.sha256 if spec.bundle else None,
        "submodule_patches": {path: ref.sha256 for path, ref in spec.submodule_patches.items()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _trim(git: Git) -> None:
    """Leave in the rebuilt tree's ``.git`` only what a task's checkout needs, so that every
    task's copy makes and removes fewer files.

    ``repack -d`` packs every loose object that refs or the index reach and deletes the loose
    copies; what is left loose is reached by nothing (the patch's blobs, once the index is reset
    to the commit), and goes too. So do the reflogs (they tell of the agent's mirror, not of the
    laptop), ORIG_HEAD and empty folders, which git makes again when it needs them.
    """
    git.run("repack", "-d", "-q", "-n")
    dot_git = git.cwd / ".git"
    for fanout in (dot_git / "objects").iterdir():
        if len(fanout.name) == 2 and all(c in "0123456789abcdef" for c in fanout.name):
            rmtree(fanout)
    rmtree(dot_git / "logs", missing_ok=True)
    (dot_git / "ORIG_HEAD").unlink(missing_ok=True)
    for empty in (dot_git / "objects" / "info", dot_git / "refs" / "tags"):
        with contextlib.suppress(OSError):  # not empty, or not there
            empty.rmdir()


def _evict_unused(
    marks: Iterable[Path], limit: int, keep: Path, lock_of: Callable[[Path], Path]
) -> None:
    """Beyond the ``limit`` most recently touched marks, remove each mark and the folder it
    marks (its name without the last suffix), unless it is ``keep`` or its lock is held."""
    for mark in sorted(marks, key=_mtime, reverse=True)[limit:]:
        folder = mark.with_suffix("")
        if folder == keep:
            continue
        lock = FileLock(lock_of(folder))
        if not lock.try_acquire():  # being built, fetched or copied: next time
            continue
        try:
            mark.unlink(missing_ok=True)
            if folder.exists():
                rmtree(folder)
        finally:
            lock.release()


def _used_mark(mirror: Path) -> Path:
    """Touched each time a tree is rebuilt from ``mirror`` (for eviction)."""
    return mirror.with_name(f"{mirror.name}.used")


def _ready_mark(tree: Path) -> Path:
    return tree.with_name(f"{tree.name}.ready")


def _ready(tree: Path) -> str | None:
    """The fingerprint ``tree`` had when it was built, None if it was not built completely;
    marks it as just used (for eviction)."""
    mark = _ready_mark(tree)
    try:
        os.utime(mark)
        built = mark.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return built if built and tree.is_dir() else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _has_commit(mirror: Path, commit: str, env: Mapping[str, str]) -> bool:
    return mirror.is_dir() and Git(mirror, extra_env=env).ok(
        "cat-file", "-e", f"{commit}^{{commit}}"
    )
