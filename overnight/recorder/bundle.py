"""Commits the remote does not have, carried as a git bundle so a never-pushed commit still runs.

The bundle holds what HEAD reaches and no remote-tracking ref of the recorded remote does; with no
remote at all it holds HEAD's whole history. Its one ref is named :data:`BUNDLE_REF`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from overnight.errors import GitError, ReconstructError
from overnight.recorder.gitrepo import Git

BUNDLE_REF = "HEAD"
_PREREQUISITE = re.compile(r"^(?:error: )?([0-9a-f]{40,64})\b", re.MULTILINE)


@dataclass(frozen=True)
class Bundle:
    """A bundle's bytes and how many commits it carries."""

    data: bytes
    commits: int


def unpushed(git: Git, remote: str | None) -> Bundle | None:
    """The bundle of commits HEAD has that ``remote`` is not known to have; None when none."""
    exclude = ["--not", f"--remotes={remote}"] if remote else []
    count = int(git.text("rev-list", "--count", "HEAD", *exclude))
    if count == 0:
        return None
    with tempfile.TemporaryDirectory(prefix="overnight-bundle-") as tmp:
        path = Path(tmp) / "unpushed.bundle"
        git.run("bundle", "create", str(path), BUNDLE_REF, *exclude)
        return Bundle(path.read_bytes(), count)


def unpushed_patch(git: Git, remote: str | None) -> bytes:
    """The changes of the commits :func:`unpushed` carries, as one patch (to look for secrets)."""
    exclude = ["--not", f"--remotes={remote}"] if remote else []
    return git.run(
        "log", "-p", "--no-color", "--no-ext-diff", "--no-textconv", "--format=", "HEAD", *exclude
    )


def unbundle(git: Git, data: bytes, *, source: str) -> None:
    """Add a bundle's commits to the repo ``git`` runs in; names missing prerequisites."""
    with tempfile.TemporaryDirectory(prefix="overnight-bundle-") as tmp:
        path = Path(tmp) / "task.bundle"
        path.write_bytes(data)
        try:
            git.run("bundle", "unbundle", str(path))
        except GitError as exc:
            missing = [match.group(1)[:7] for match in _PREREQUISITE.finditer(exc.stderr)]
            if missing or "prerequisite" in exc.stderr:
                raise ReconstructError(
                    f"the task's bundle builds on commit(s) {', '.join(missing) or '?'} that "
                    f"{source} does not have (pushed, then removed?); push them and enqueue again"
                ) from exc
            raise ReconstructError(f"the task's bundle is unusable: {exc.reason}") from exc
