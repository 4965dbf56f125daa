"""Changes inside submodules: recorded as a patch per submodule, or refused with the fix.

A snapshot records each submodule's commit (the gitlink in the recorded tree), and an agent checks
that commit out from the submodule's own remote. A submodule whose working tree differs from its
commit (edits, untracked files, deletions) gets its own patch, captured exactly as the
superproject's (:func:`overnight.recorder.patch.capture`), and the tree id it produces; so do
submodules nested in it, at any depth, keyed by their path from the superproject's root. An agent
applies them after checking the submodules out, outermost first, and checks each tree id.

A submodule at a commit that none of its remote branches or tags has cannot be checked out by an
agent: that is refused here, naming the submodule and the fix, rather than failing later.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from overnight.errors import GitError, SnapshotError
from overnight.recorder import patch
from overnight.recorder.gitrepo import Git


@dataclass(frozen=True)
class SubmoduleChange:
    """A submodule's working tree, where it differs from its commit."""

    path: str  # from the superproject's root, POSIX separators
    tree: str  # the tree id of the recorded working tree
    patch: bytes
    changed: list[tuple[str, int]]  # (path from the superproject's root, size) in the patch


def capture_submodules(
    git: Git,
    links: Mapping[str, str],
    *,
    max_untracked_file_mb: float,
    max_snapshot_mb: float,
    prefix: str = "",
    allow_secret_files: bool = False,
) -> list[SubmoduleChange]:
    """The changes inside the checked-out submodules among ``links`` (path -> commit), nested
    ones too; raises :class:`SnapshotError` for a commit that no remote of its submodule has."""
    found: list[SubmoduleChange] = []
    for path in sorted(links):
        sub = git.cwd / path
        if not (sub / ".git").exists():
            continue  # not checked out here: its recorded commit is all there is
        full = posixpath.join(prefix, path) if prefix else path
        at = git.at(sub)
        try:
            _check_pushed(at, full)
            tree = patch.capture(
                at,
                max_untracked_file_mb=max_untracked_file_mb,
                max_snapshot_mb=max_snapshot_mb,
                prefix=f"{full}/",
                allow_secret_files=allow_secret_files,
                literal=False,  # not yet kept for the files of submodules
            )
        except GitError as exc:
            raise SnapshotError(f"cannot read submodule {full}: {exc.reason}") from exc
        if tree.dirty:
            changed = [(posixpath.join(full, name), size) for name, size in tree.changed]
            found.append(SubmoduleChange(full, tree.tree, tree.patch, changed))
        found.extend(
            capture_submodules(
                at,
                tree.submodules,
                max_untracked_file_mb=max_untracked_file_mb,
                max_snapshot_mb=max_snapshot_mb,
                prefix=full,
                allow_secret_files=allow_secret_files,
            )
        )
    return found


def _check_pushed(git: Git, path: str) -> None:
    remote_refs = git.text("for-each-ref", "--format=%(refname)", "refs/remotes")
    if not remote_refs:
        return  # no remote-tracking branches to tell by: the agent's checkout will say
    known = git.text(
        "for-each-ref", "--count=1", "--contains", "HEAD", "--format=%(refname)",
        "refs/remotes", "refs/tags",
    )  # fmt: skip
    if not known:
        head = git.text("rev-parse", "--short", "HEAD")
        raise SnapshotError(
            f"submodule {path} is at commit {head}, which none of its remote branches has, so "
            f"agents cannot check it out; push it (git -C {path} push), or fetch "
            f"(git -C {path} fetch) if it is already there"
        )
