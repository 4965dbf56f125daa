"""Rebuild a recorded working tree: clone, add the bundle, check out the commit, apply the patch,
check out the submodules and apply their changes.

The result is verified: the tree git writes from the rebuilt index must be the recorded tree id.
Afterwards the index is reset to the commit, so ``git status`` and ``git diff`` in the task show
the recorded change as uncommitted, as on the laptop.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from overnight.errors import GitError, LocalRepoError, ReconstructError
from overnight.recorder import bundle
from overnight.recorder.gitrepo import Git
from overnight.recorder.urls import ALLOW_LOCAL_HINT, require_network_url, strip_credentials
from overnight.spec import Snapshot

# Settings the rebuilt repo keeps, so the task's own git commands see the tree as recorded.
_REPO_CONFIG = (("core.autocrlf", "false"), ("core.safecrlf", "false"))


def reconstruct(
    snapshot: Snapshot,
    dest: Path,
    *,
    source: str | None = None,
    git_env: Mapping[str, str] | None = None,
    allow_local: bool = True,
) -> None:
    """Rebuild the recorded working tree at ``dest``, which must not exist or be empty.

    ``source`` is where commits are cloned from instead of the recorded URL (an agent's mirror);
    ``git_env`` is added to git's environment (credentials, ``GIT_SSH_COMMAND``). Without
    ``allow_local`` (an agent's ``allow_local_repos``), the recorded URL when it is cloned from
    and every submodule URL must be network URLs: :class:`LocalRepoError` otherwise. On failure
    ``dest`` is left as it was found and :class:`ReconstructError` names the cause.
    """
    dest = Path(dest)
    url = snapshot.spec.repo.url
    if not allow_local and source is None and url:
        require_network_url(url, "repo.url")
    existed = dest.exists()
    if existed and (not dest.is_dir() or any(dest.iterdir())):
        raise ReconstructError(f"{dest} already exists and is not an empty folder; pick a new one")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _rebuild(snapshot, dest, source, git_env, allow_local)
    except GitError as exc:  # a step with no likelier cause to name (the checkout itself, say)
        _clear(dest, remove=not existed)
        raise ReconstructError(
            f"cannot rebuild {snapshot.spec.repo.commit[:7]} at {dest}: {exc.reason}"
        ) from exc
    except BaseException:
        _clear(dest, remove=not existed)
        raise


def _clear(dest: Path, *, remove: bool) -> None:
    if remove:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _where(snapshot: Snapshot, source: str | None) -> str:
    repo = snapshot.spec.repo
    if source is not None and source != repo.url:
        return f"the mirror of {repo.url}" if repo.url else source
    return f"{repo.remote} ({repo.url})" if repo.remote and repo.url else str(repo.url)


def _rebuild(
    snapshot: Snapshot,
    dest: Path,
    source: str | None,
    git_env: Mapping[str, str] | None,
    allow_local: bool,
) -> None:
    spec = snapshot.spec
    repo = spec.repo
    short = repo.commit[:7]
    origin = source if source is not None else repo.url
    git = Git(dest, extra_env=git_env)
    if origin:
        try:
            git.run("clone", "--quiet", "--no-checkout", "--origin", "origin", "--", origin, ".")
        except GitError as exc:
            raise ReconstructError(
                f"cannot reach {strip_credentials(origin)}: {exc.reason}"
            ) from exc
        if repo.url and origin != repo.url:
            git.run("remote", "set-url", "origin", repo.url)
    else:
        git.run("init", "--quiet", ".")
    for key, value in _REPO_CONFIG:
        git.run("config", key, value)
    if not _has_commit(git, repo.commit):
        data = snapshot.blob(spec.bundle)
        if data is None:
            raise ReconstructError(
                f"commit {short} is not on {_where(snapshot, source)} and the task carries no "
                "bundle; push it (git push) and enqueue again"
            )
        bundle.unbundle(git, data, source=_where(snapshot, source))
        if not _has_commit(git, repo.commit):
            raise ReconstructError(f"the task's bundle does not contain commit {short}")
    _check_out(git, repo.commit, repo.branch)
    data = snapshot.blob(spec.patch)
    if data:
        _apply(git, data, short)
    if repo.tree:
        rebuilt = git.text("write-tree")
        if rebuilt != repo.tree:
            raise ReconstructError(
                f"the rebuilt tree {rebuilt[:12]} differs from the recorded tree {repo.tree[:12]} "
                f"after applying the patch to {short}; the task spec is inconsistent"
            )
    if repo.submodules:
        _submodules(git, allow_local)
    _submodule_changes(snapshot, dest, git_env, allow_local)
    if data:
        git.run("reset", "--quiet", "--mixed")


def _has_commit(git: Git, commit: str) -> bool:
    return git.ok("cat-file", "-e", f"{commit}^{{commit}}")


def _check_out(git: Git, commit: str, branch: str | None) -> None:
    if branch:
        git.run("checkout", "--quiet", "-B", branch, commit)
    else:
        git.run("checkout", "--quiet", "--detach", commit)


def _submodule_changes(
    snapshot: Snapshot, dest: Path, git_env: Mapping[str, str] | None, allow_local: bool
) -> None:
    """Apply each submodule's recorded change, outermost first, and check its tree id."""
    spec = snapshot.spec
    for path in sorted(spec.submodule_patches, key=lambda p: (p.count("/"), p)):
        sub = Git(dest / path, extra_env=git_env)
        if not (dest / path / ".git").exists():
            raise ReconstructError(f"submodule {path} was not checked out; its change cannot apply")
        data = snapshot.blob(spec.submodule_patches[path])
        assert data is not None
        _apply(sub, data, f"submodule {path}")
        rebuilt = sub.text("write-tree")
        recorded = spec.repo.submodule_trees[path]
        if rebuilt != recorded:
            raise ReconstructError(
                f"submodule {path}: the rebuilt tree {rebuilt[:12]} differs from the recorded "
                f"tree {recorded[:12]}; the task spec is inconsistent"
            )
        if (dest / path / ".gitmodules").exists():
            _submodules(sub, allow_local)  # its own submodules, at the commits its change records
        sub.run("reset", "--quiet", "--mixed")


def _apply(git: Git, data: bytes, short: str) -> None:
    fd, name = tempfile.mkstemp(prefix="overnight-", suffix=".patch")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        git.run("apply", "--index", "--whitespace=nowarn", name)
    except GitError as exc:
        raise ReconstructError(f"patch does not apply to {short}: {exc.reason}") from exc
    finally:
        os.unlink(name)


# Transports git may clone submodules with when local repos are not allowed. The task's
# .gitmodules names the URLs; a relative one resolves against the (network) remote.
_NETWORK_ONLY = (
    "protocol.allow=never",
    *(f"protocol.{name}.allow=always" for name in ("https", "http", "ssh", "git")),
)


def _submodules(git: Git, allow_local: bool) -> None:
    # The index holds the recorded submodule commits (the patch updated them), so update
    # checks out exactly those. Local-path submodule URLs need the file protocol.
    config = ("protocol.file.allow=always",) if allow_local else _NETWORK_ONLY
    try:
        git.run("submodule", "update", "--init", "--recursive", "--quiet", config=config)
    except GitError as exc:
        if not allow_local and "not allowed" in exc.reason:
            raise LocalRepoError(
                f"cannot check out the submodules: {exc.reason}: a submodule URL is a local "
                f"path or an unknown transport, which agents do not fetch; {ALLOW_LOCAL_HINT}"
            ) from exc
        raise ReconstructError(f"cannot check out the submodules: {exc.reason}") from exc
