"""Rebuild a recorded working tree: clone, add the bundle, check out the commit, apply the patch,
write the files a checkout does not reproduce byte for byte (.gitattributes conversions), check
out the submodules and apply their changes.

The result is verified: the tree git writes from the rebuilt index must be the recorded tree id.
Afterwards the index is reset to the commit, so ``git status`` and ``git diff`` in the task show
the recorded change as uncommitted, as on the laptop.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from overnight.errors import GitError, LocalRepoError, ReconstructError
from overnight.recorder import bundle, conversions
from overnight.recorder.gitrepo import Git, split_z
from overnight.recorder.urls import ALLOW_LOCAL_HINT, require_network_url, strip_credentials
from overnight.spec import Snapshot

# What a remote says when it has no object of the id asked for (git's upload-pack, GitHub, GitLab).
NO_SUCH_COMMIT = ("not our ref", "couldn't find remote ref", "no such remote ref")


def no_longer_on(commit: str, where: str) -> str:
    """The error line for a commit that no ref of ``where`` holds and that it no longer has."""
    return (
        f"commit {commit[:7]} is no longer on {where}: no branch or tag holds it any more "
        "(force-pushed or deleted) and the remote no longer has it; push it again "
        f"(git push origin {commit[:7]}:refs/heads/BRANCH) or enqueue again from a checkout "
        "that has it, which bundles the commits the remote lacks"
    )


# Settings the rebuilt repo keeps, so the task's own git commands see the tree as recorded.
_REPO_CONFIG = (
    ("core.autocrlf", "false"),
    ("core.safecrlf", "false"),
    *conversions.CHECKOUT_CONFIG,
)


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
    git = Git(dest, extra_env=_pinned(dest, git_env))
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
        if data is None and origin:
            _fetch_by_id(git, repo.commit, _where(snapshot, source))
        elif data is None:
            raise ReconstructError(
                f"commit {short} is not on {_where(snapshot, source)} and the task carries no "
                "bundle; push it (git push) and enqueue again"
            )
        else:
            bundle.unbundle(git, data, source=_where(snapshot, source))
            if not _has_commit(git, repo.commit):
                raise ReconstructError(f"the task's bundle does not contain commit {short}")
    _check_out(git, repo.commit, repo.branch)
    data = snapshot.blob(spec.patch)
    if data:
        _apply(git, data, short)
    literal = snapshot.blob(spec.literal_files)
    if literal is not None:
        conversions.restore(git, literal)
    if repo.tree:
        rebuilt = git.text("write-tree")
        if rebuilt != repo.tree:
            raise ReconstructError(
                f"the rebuilt tree {rebuilt[:12]} differs from the recorded tree {repo.tree[:12]} "
                f"after applying the patch to {short}; the task spec is inconsistent"
            )
    if repo.submodules:
        _submodules(git, allow_local)
    if spec.submodule_patches:
        _submodule_changes(
            snapshot, dest, repo.tree or git.text("write-tree"), git_env, allow_local
        )
    if data:
        git.run("reset", "--quiet", "--mixed")


def _fetch_by_id(git: Git, commit: str, where: str) -> None:
    """Fetch ``commit``, which no branch or tag of ``origin`` holds, by its id."""
    try:
        git.run("fetch", "--quiet", "--no-tags", "origin", commit)
    except GitError as exc:
        if any(hint in exc.stderr.lower() for hint in NO_SUCH_COMMIT):
            raise ReconstructError(no_longer_on(commit, where)) from exc
        raise ReconstructError(
            f"cannot fetch commit {commit[:7]} from {where}: {exc.reason}"
        ) from exc


def _has_commit(git: Git, commit: str) -> bool:
    return git.ok("cat-file", "-e", f"{commit}^{{commit}}")


def _check_out(git: Git, commit: str, branch: str | None) -> None:
    if branch:
        git.run("checkout", "--quiet", "-B", branch, commit)
    else:
        git.run("checkout", "--quiet", "--detach", commit)


def _submodule_changes(
    snapshot: Snapshot,
    dest: Path,
    top: str,
    git_env: Mapping[str, str] | None,
    allow_local: bool,
) -> None:
    """Apply each submodule's recorded change, outermost first, and check its tree id.

    ``top`` is the superproject's rebuilt tree. A key of ``submodule_patches`` must name a
    submodule the rebuild checked out itself (see :func:`_submodule`): git never runs anywhere
    else, so a spec cannot make it write into, or run commands from, another repository.
    """
    spec = snapshot.spec
    for path in sorted(spec.submodule_patches, key=lambda p: (p.count("/"), p)):
        sub = _submodule(dest, path, top, spec.repo.submodule_trees, git_env)
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
        if (sub.cwd / ".gitmodules").is_file():
            _submodules(sub, allow_local)  # its own submodules, at the commits its change records
        sub.run("reset", "--quiet", "--mixed")


_KINDS = {"040000": "a folder", "120000": "a symbolic link", "100644": "a file", "100755": "a file"}


def _submodule(
    dest: Path, key: str, top: str, trees: Mapping[str, str], git_env: Mapping[str, str] | None
) -> Git:
    """git in the submodule at ``key``: a gitlink in the recorded tree of its parent (the
    superproject, or for a nested key the submodule around it), checked out by the rebuild.

    Each step is looked up in the parent's tree by its literal path, never as a pathspec; a
    nested submodule's parent tree is its recorded tree (``trees``) or the commit it was
    checked out at.
    """
    parts = key.split("/")
    parent, tree, start = Git(dest, extra_env=_pinned(dest, git_env)), top, 0
    for end in range(1, len(parts) + 1):
        mode = _mode(parent, tree, parts[start : end - 1], parts[end - 1])
        if mode == "040000" and end < len(parts):
            continue
        here = "/".join(parts[:end])
        if mode != "160000":
            kind = _KINDS.get(mode or "", "not there")
            raise ReconstructError(
                f"task spec field 'submodule_patches' names {key!r}, but {here!r} is {kind} in "
                "the recorded tree, not a submodule; the task spec is inconsistent"
            )
        sub = _checked_out(dest, here, key, git_env)
        if end == len(parts):
            return sub
        parent, tree, start = sub, trees.get(here, "HEAD"), end
    raise AssertionError("unreachable: a key has at least one component")


def _mode(git: Git, tree: str, folder: list[str], name: str) -> str | None:
    """The mode of the entry ``name`` in ``folder`` (components) of ``tree``, None if absent.

    The folder is named in revision syntax and the entry matched by name, never through a
    pathspec, so no part of a key is read as a pattern or as magic.
    """
    where = f"{tree}:{'/'.join(folder)}" if folder else tree
    for entry in split_z(git.run("ls-tree", "-z", "--full-tree", where)):
        meta, _, entry_name = entry.partition("\t")
        if entry_name == name:
            return meta.split(" ", 1)[0]
    return None


def _checked_out(dest: Path, rel: str, key: str, git_env: Mapping[str, str] | None) -> Git:
    """git in the submodule folder ``dest/rel``, reached through real folders only (a patch can
    make symbolic links), whose repository is its own and lives in the rebuild's ``.git``."""
    folder = dest
    for part in rel.split("/"):
        folder = folder / part
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            mode = 0
        if not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
            raise ReconstructError(
                f"task spec field 'submodule_patches' names {key!r}, but "
                f"{folder.relative_to(dest).as_posix()!r} is {what} in the rebuilt tree; "
                "its change cannot apply"
            )
    real = folder.resolve()
    if not real.is_relative_to(dest.resolve()):
        raise ReconstructError(
            f"task spec field 'submodule_patches' names {key!r}, which is outside the rebuilt "
            "tree; its change cannot apply"
        )
    dot_git = folder / ".git"
    if dot_git.is_symlink() or not dot_git.is_file():
        raise ReconstructError(f"submodule {rel} was not checked out; its change cannot apply")
    sub = Git(folder, extra_env=_pinned(folder, git_env))
    top, git_dir = sub.text("rev-parse", "--show-toplevel", "--absolute-git-dir").splitlines()
    ours = Path(git_dir).resolve().is_relative_to((dest / ".git" / "modules").resolve())
    if Path(top).resolve() != real or not ours:
        raise ReconstructError(
            f"submodule {rel} is not a repository the rebuild checked out; its change cannot apply"
        )
    return sub


def _pinned(folder: Path, git_env: Mapping[str, str] | None) -> dict[str, str]:
    """``git_env``, and git never looks for a repository above ``folder``."""
    return {**(git_env or {}), "GIT_CEILING_DIRECTORIES": str(folder.resolve().parent)}


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
