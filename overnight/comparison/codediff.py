"""The code of two runs as a diff between their exact trees, computed from the snapshots alone.

Each run's tree is rebuilt as git objects in a throwaway bare repository, never checked out:
its commit, read into a private index, with the run's patch (uncommitted and untracked changes)
applied to that index, and the result checked against the recorded tree id. Commits come, in
this order, from the repository compare runs in (borrowed read-only, as an alternate object
store, so nothing is fetched for a commit it has), from the run's bundle of unpushed commits,
and from the recorded remote, fetched into the throwaway repository only when a commit is still
missing. Two runs with the same recorded tree id have the same code: nothing is rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from overnight.errors import GitError, LocalRepoError, ReconstructError
from overnight.recorder import bundle, patch
from overnight.recorder.gitrepo import Git
from overnight.recorder.urls import is_network_url, strip_credentials
from overnight.spec import Snapshot

_PATCH_ARGS = (*(a for a in patch.DIFF_ARGS if a != "--binary"), "--numstat", "-z")
"""The recorder's diff options (:mod:`overnight.recorder.patch`) with a listing of the files
and without ``--binary``: a binary file's change is one ``Binary files ... differ`` line."""
_STAT_ARGS = tuple(a for a in _PATCH_ARGS if a != "-p" and not a.startswith("--unified"))
"""The listing alone (``-U`` too asks for the patch)."""

_FETCH_REFS = ("+refs/heads/*:refs/fetched/heads/*", "+refs/tags/*:refs/fetched/tags/*")
_MAX_COMMITS = 20  # subjects listed of the commits one tree has and the other lacks


@dataclasses.dataclass(frozen=True)
class FileChange:
    """One file of a diff; ``added`` and ``deleted`` (lines) are None for a binary file."""

    path: str
    old_path: str | None = None  # where a renamed file came from
    added: int | None = None
    deleted: int | None = None

    @property
    def binary(self) -> bool:
        return self.added is None


@dataclasses.dataclass(frozen=True)
class Commits:
    """How two runs' commits relate: the commits each has that the other lacks."""

    old: str
    new: str
    behind: int | None = 0  # commits of ``old`` that ``new`` lacks; None: history not here
    ahead: int | None = 0  # commits of ``new`` that ``old`` lacks (a shallow clone lent them)
    subjects: tuple[str, ...] = ()  # "abc1234 subject" of the newest ahead commits


@dataclasses.dataclass(frozen=True)
class CodeDiff:
    """From one run's tree to another's: the commits, the files, and the unified diff."""

    old_tree: str
    new_tree: str
    commits: Commits
    files: tuple[FileChange, ...] = ()
    patch: str = ""  # empty with stat_only

    @property
    def changed(self) -> bool:
        return self.old_tree != self.new_tree


class TreeBuilder:
    """A throwaway bare repository that rebuilds recorded trees and diffs them; removed on
    :meth:`close` (use it as a context manager).

    ``local_repo`` is a repository whose objects are borrowed (read, never written), typically
    the one compare runs in; ``allow_local`` lets a recorded remote that is a local path be
    fetched (as an agent's ``allow_local_repos``); ``on_fetch`` is told each URL before it is
    fetched (a fetch can take a while).
    """

    def __init__(
        self,
        *,
        local_repo: Path | None = None,
        allow_local: bool = False,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="overnight-compare-")
        self._dir = Path(self._tmp.name)
        repo = self._dir / "repo.git"
        self.git = Git(self._dir, extra_env={"GIT_CEILING_DIRECTORIES": str(self._dir)})
        try:
            self.git.run("init", "--quiet", "--bare", str(repo))
            borrowed = _objects_of(local_repo) if local_repo is not None else None
        except BaseException:
            self.close()
            raise
        self.git = self.git.at(repo)
        if borrowed is not None:
            (repo / "objects" / "info" / "alternates").write_text(f"{borrowed}\n")
        self.allow_local = allow_local
        self.on_fetch = on_fetch
        self._fetched: set[str] = set()
        self._trees: dict[tuple[str, str], str] = {}
        self.fetches = 0  # remotes fetched from, for tests and the bench

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> TreeBuilder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def tree(self, snapshot: Snapshot, task_id: str) -> str:
        """The id of the run's tree (its commit with its patch applied), rebuilt once."""
        spec = snapshot.spec
        key = (spec.repo.commit, spec.patch.sha256 if spec.patch else "")
        if key not in self._trees:
            self._trees[key] = self._rebuild(snapshot, task_id)
        return self._trees[key]

    def diff(
        self, old: Snapshot, new: Snapshot, ids: tuple[str, str], *, stat_only: bool = False
    ) -> CodeDiff:
        """The change from run ``ids[0]``'s tree to run ``ids[1]``'s."""
        commits = Commits(old.spec.repo.commit, new.spec.repo.commit)
        recorded = old.spec.repo.tree, new.spec.repo.tree
        if recorded[0] is not None and recorded[0] == recorded[1]:
            return CodeDiff(recorded[0], recorded[0], commits)  # same code: nothing to rebuild
        old_tree, new_tree = self.tree(old, ids[0]), self.tree(new, ids[1])
        if commits.old != commits.new:
            commits = self._commits(commits)
        if old_tree == new_tree:
            return CodeDiff(old_tree, new_tree, commits)
        out = self.git.run(*(_STAT_ARGS if stat_only else _PATCH_ARGS), old_tree, new_tree)
        files, text = _parse(out)
        return CodeDiff(old_tree, new_tree, commits, files, text.decode("utf-8", "replace"))

    def _rebuild(self, snapshot: Snapshot, task_id: str) -> str:
        spec = snapshot.spec
        self._ensure_commit(snapshot, task_id)
        env = {"GIT_INDEX_FILE": str(self._dir / f"index-{len(self._trees)}")}
        self.git.run("read-tree", spec.repo.commit, env=env)
        data = snapshot.blob(spec.patch)
        if data:
            path = self._dir / "run.patch"
            path.write_bytes(data)
            try:
                self.git.run("apply", "--cached", "--whitespace=nowarn", str(path), env=env)
            except GitError as exc:
                raise ReconstructError(
                    f"task {task_id}: its patch does not apply to {spec.repo.commit[:7]}: "
                    f"{exc.reason}; the task spec is inconsistent"
                ) from exc
        tree = self.git.text("write-tree", env=env)
        if spec.repo.tree and tree != spec.repo.tree:
            raise ReconstructError(
                f"task {task_id}: the rebuilt tree {tree[:12]} differs from the recorded tree "
                f"{spec.repo.tree[:12]}; the task spec is inconsistent"
            )
        return tree

    def _has(self, commit: str) -> bool:
        return self.git.ok("cat-file", "-e", f"{commit}^{{commit}}")

    def _ensure_commit(self, snapshot: Snapshot, task_id: str) -> None:
        """Find the run's commit here, in its bundle, or on its remote, in that order; a bundle
        whose base is missing is added after the fetch."""
        spec = snapshot.spec
        commit = spec.repo.commit
        if self._has(commit):
            return
        data = snapshot.blob(spec.bundle)
        url = spec.repo.url
        if data:
            with contextlib.suppress(ReconstructError):  # its base is on the remote: fetched below
                bundle.unbundle(self.git, data, source="this repository")
            if self._has(commit):
                return
        if url:
            self._fetch(url, commit, task_id)
            if data and not self._has(commit):
                bundle.unbundle(self.git, data, source=strip_credentials(url))
        if not self._has(commit):
            where = f"on {strip_credentials(url)}" if url else "anywhere (the run has no remote)"
            raise ReconstructError(
                f"task {task_id}: commit {commit[:7]} is not in this repository, in the task's "
                f"bundle nor {where}; run compare in a clone that has it"
            )

    def _fetch(self, url: str, commit: str, task_id: str) -> None:
        if url in self._fetched:
            if not self._has(commit):
                self.git.ok("fetch", "--quiet", "--no-tags", "--", url, commit)
            return
        if not self.allow_local and not is_network_url(url):
            raise LocalRepoError(
                f"task {task_id}: its remote {strip_credentials(url)!r} is a local path, which "
                "compare fetches only with allow_local_repos (OVERNIGHT_ALLOW_LOCAL_REPOS=1); or run "
                f"compare in a clone that has commit {commit[:7]}"
            )
        self._fetched.add(url)
        self.fetches += 1
        if self.on_fetch is not None:
            self.on_fetch(strip_credentials(url))
        try:
            self.git.run("fetch", "--quiet", "--no-tags", "--", url, *_FETCH_REFS)
        except GitError as exc:
            raise ReconstructError(
                f"task {task_id}: cannot fetch commit {commit[:7]} from "
                f"{strip_credentials(url)}: {exc.reason}; check that it is reachable, or run "
                "compare in a clone that has the commit"
            ) from exc
        if not self._has(commit):  # not on a branch or tag: by id, where the server allows it
            self.git.ok("fetch", "--quiet", "--no-tags", "--", url, commit)

    def _commits(self, commits: Commits) -> Commits:
        span = f"{commits.old}...{commits.new}"
        try:
            counts = self.git.text("rev-list", "--left-right", "--count", span).split()
            log = self.git.text(
                "log",
                f"--max-count={_MAX_COMMITS}",
                "--format=%h %s",
                f"{commits.old}..{commits.new}",
            )
        except GitError:  # their history is cut (a shallow clone): the trees still compare
            return dataclasses.replace(commits, behind=None, ahead=None)
        return dataclasses.replace(
            commits,
            behind=int(counts[0]),
            ahead=int(counts[1]),
            subjects=tuple(line for line in log.splitlines() if line),
        )


def _objects_of(repo: Path) -> Path | None:
    """The object folder of the repository ``repo`` is in, or None when it is in none."""
    git = Git(repo, extra_env={"GIT_CEILING_DIRECTORIES": str(repo.resolve().parent)})
    if not repo.is_dir() or not git.ok("rev-parse", "--git-dir"):
        return None
    common = git.text("rev-parse", "--path-format=absolute", "--git-common-dir")
    objects = Path(common) / "objects"
    return objects if objects.is_dir() else None


def _parse(out: bytes) -> tuple[tuple[FileChange, ...], bytes]:
    """The ``--numstat -z`` listing (an empty field ends it) and the patch after it."""
    fields = out.split(b"\0")
    files: list[FileChange] = []
    i = 0
    while i < len(fields) and fields[i]:
        added, deleted, path = fields[i].decode("utf-8", "replace").split("\t", 2)
        old_path = None
        if not path:  # a rename: the old path, then the new one
            old_path, path = (f.decode("utf-8", "replace") for f in fields[i + 1 : i + 3])
            i += 2
        lines = (None, None) if added == "-" else (int(added), int(deleted))
        files.append(FileChange(path, old_path, *lines))
        i += 1
    return tuple(files), b"\0".join(fields[i + 1 :])
