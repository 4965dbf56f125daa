"""Submodules a snapshot cannot carry as they are: uncommitted changes, commits not pushed.

A snapshot records each submodule's commit (the gitlink in the recorded tree), and an agent checks
that commit out from the submodule's own remote. Edits inside a submodule, and commits it has that
its remote lacks, would not travel: the task would run other code than the laptop has, or fail
on the agent. So the recorder refuses them here, naming the submodule and the fix, instead of
dropping them silently.
"""

from __future__ import annotations

from collections.abc import Iterable

from overnight.errors import GitError, SnapshotError
from overnight.recorder.gitrepo import Git, split_z

_SHOWN = 3  # changed paths named in the error


def check_submodules(git: Git, paths: Iterable[str]) -> None:
    """Raise :class:`SnapshotError` for the first checked-out submodule that would not travel."""
    for path in sorted(paths):
        sub = git.cwd / path
        if not (sub / ".git").exists():
            continue  # not checked out here: its recorded commit is all there is
        at = git.at(sub)
        try:
            _check_one(at, path)
        except GitError as exc:
            raise SnapshotError(f"cannot read submodule {path}: {exc.reason}") from exc


def _check_one(git: Git, path: str) -> None:
    status = git.run(
        "status", "--porcelain", "-z", "--ignore-submodules=none", "--untracked-files=all"
    )
    changed = [entry[3:] for entry in split_z(status) if len(entry) > 3 and entry[2] == " "]
    if changed:
        shown = ", ".join(changed[:_SHOWN]) + (", ..." if len(changed) > _SHOWN else "")
        raise SnapshotError(
            f"submodule {path} has uncommitted changes ({len(changed)} path"
            f"{'s' if len(changed) != 1 else ''}: {shown}), which a snapshot cannot carry; "
            f"commit and push them in {path}, or stash them (git -C {path} stash -u)"
        )
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
