"""The change from HEAD to the working tree, as a binary git patch and the tree it produces.

The working tree is written to a git tree object through a temporary index (a copy of the user's,
for its stat cache) and a temporary object directory that borrows the repo's objects, so the
user's index and object store are never touched. ``git add -A`` on that index takes staged and
unstaged edits, untracked files that are not ignored, deletions, modes and symlinks, exactly as
git would commit them. The patch is ``git diff-tree --binary`` from HEAD's tree to that tree.

Line endings: ``core.autocrlf`` is forced off, so bytes are stored as they are. Files under a
``.gitattributes`` conversion (``text``, ``eol``, ``ident``) are stored as git stores them; those
a checkout would not write back as they are here travel as they are too
(:mod:`overnight.recorder.conversions`), so the rebuilt tree matches the laptop's byte for byte.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from overnight.errors import GitError, SnapshotError
from overnight.recorder import conversions
from overnight.recorder.gitrepo import Git, split_z
from overnight.recorder.limits import check_total, check_untracked
from overnight.recorder.secrets import refuse_secret_files

GITLINK = "160000"

DIFF_ARGS = (
    "diff-tree",
    "-r",
    "-p",
    "--binary",
    "--full-index",
    "--find-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=short",
    "--unified=3",
)

# Objects written while recording go to a throwaway store: compressing them buys nothing.
_SCRATCH_CONFIG = ("core.looseCompression=0",)


@dataclass(frozen=True)
class WorkingTree:
    """A working tree as git objects: HEAD's tree, the tree of the working tree, the patch."""

    head_tree: str
    tree: str
    patch: bytes
    changed: list[tuple[str, int]] = field(default_factory=list)  # (path, size) in the patch
    submodules: dict[str, str] = field(default_factory=dict)  # path -> commit
    untracked: list[tuple[str, int]] = field(default_factory=list)  # (path, size) recorded
    paths: frozenset[str] = frozenset()  # every file of the tree (and each submodule's path)
    literal: bytes = b""  # files a checkout would not write back as they are (see conversions)

    @property
    def dirty(self) -> bool:
        return self.tree != self.head_tree


def _index_listing(git: Git, env: dict[str, str]) -> tuple[list[str], list[str], frozenset[str]]:
    """The untracked, not ignored paths, the ``assume-unchanged`` entries of the index ``env``
    names and every path the two hold (what the recorded tree has), from one ``git ls-files``."""
    listing = git.run("ls-files", "-v", "-z", "--cached", "--others", "--exclude-standard", env=env)
    untracked: list[str] = []
    assumed: list[str] = []
    paths: set[str] = set()
    for entry in split_z(listing):
        tag, path = entry[:1], entry[2:]
        paths.add(path)
        if tag == "?":
            untracked.append(path)
        elif tag.islower():
            assumed.append(path)
    return untracked, assumed, frozenset(paths)


def _sized(git: Git, untracked: list[str]) -> list[tuple[str, int]]:
    files: list[tuple[str, int]] = []
    for path in untracked:
        if path.endswith("/"):
            raise SnapshotError(
                f"{path} is a separate git repository inside this one (not a submodule), so its "
                "files cannot be recorded; add it to .gitignore or make it a submodule"
            )
        try:
            files.append((path, os.lstat(git.cwd / path).st_size))
        except FileNotFoundError:
            continue  # removed while we looked
    return files


def capture(
    git: Git,
    *,
    max_untracked_file_mb: float,
    max_snapshot_mb: float,
    prefix: str = "",
    allow_secret_files: bool = False,
    literal: bool = True,
) -> WorkingTree:
    """Record the working tree of the repo whose top level ``git`` runs in; errors name files
    with ``prefix`` before them (a submodule's path). Untracked files named like keys are
    refused unless ``allow_secret_files``. With ``literal``, the files a checkout would not
    write back as they are here are kept too."""
    paths = git.text(
        "rev-parse", "--git-path", "index", "--git-path", "objects",
        "--git-path", "info/attributes", "HEAD^{tree}",
    ).splitlines()  # fmt: skip
    index_path, objects, info_attributes = (git.cwd / line for line in paths[:3])
    head_tree = paths[3]
    with tempfile.TemporaryDirectory(prefix="overnight-snapshot-") as tmp:
        tmp_objects = Path(tmp) / "objects"
        for sub in ("info", "pack"):
            (tmp_objects / sub).mkdir(parents=True)
        env = {
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
            "GIT_OBJECT_DIRECTORY": str(tmp_objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects.resolve()),
        }
        if index_path.exists():
            shutil.copy2(index_path, env["GIT_INDEX_FILE"])  # keep its mtime (racy entries)
        listed, assumed, in_tree = _index_listing(git, env)
        attributes = conversions.has_attributes(in_tree)
        untracked = _sized(git, listed)
        named = [(prefix + path, size) for path, size in untracked]
        if not allow_secret_files:
            refuse_secret_files([path for path, _ in named])
        check_untracked(named, max_untracked_file_mb)
        check_total(sum(size for _, size in untracked), 0, named, max_snapshot_mb)
        try:
            tree = _write_tree(git, assumed, env)
        except GitError as exc:
            raise SnapshotError(
                f"cannot record the working tree: {exc.reason}; make the file readable "
                "or add it to .gitignore"
            ) from exc
        submodules = _gitlinks(git, tree, env) if (git.cwd / ".gitmodules").exists() else {}
        changed, patch = _diff(git, head_tree, tree, env) if tree != head_tree else ([], b"")
        own = _has_content(info_attributes)  # git add obeyed it; agents will not see it
        kept = b""
        if literal and (attributes or own or conversions.changes_attributes(patch)):
            kept = conversions.literal_files(git, env, Path(tmp), tree, patch)
        return WorkingTree(
            head_tree, tree, patch, changed, submodules, untracked=untracked, paths=in_tree,
            literal=kept,
        )  # fmt: skip


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _write_tree(git: Git, assumed: list[str], env: dict[str, str]) -> str:
    """The tree of the working tree, from the index copy ``env`` names (HEAD's if none)."""
    tmp_index = Path(env["GIT_INDEX_FILE"])
    if tmp_index.exists():
        _forget_assume_unchanged(git, assumed, env)
    else:
        git.run("read-tree", "HEAD", env=env)
    try:
        git.run("add", "-A", env=env, config=_SCRATCH_CONFIG)
    except GitError:
        # An index this git cannot read in a copy (a split index, say): start from HEAD.
        tmp_index.unlink(missing_ok=True)
        git.run("read-tree", "HEAD", env=env)
        git.run("add", "-A", env=env, config=_SCRATCH_CONFIG)
    return git.text("write-tree", env=env)


def _forget_assume_unchanged(git: Git, paths: list[str], env: dict[str, str]) -> None:
    """Clear ``assume-unchanged`` bits in the copy, so such files are recorded as they are."""
    if paths:
        data = "\0".join(paths).encode("utf-8", "surrogateescape") + b"\0"
        git.run("update-index", "--no-assume-unchanged", "-z", "--stdin", input=data, env=env)


def _diff(git: Git, old: str, new: str, env: dict[str, str]) -> tuple[list[tuple[str, int]], bytes]:
    """The (path, size) of each file the change from ``old`` to ``new`` writes, and its patch,
    from one ``git diff-tree`` (its raw listing, then the patch) and one ``git cat-file``."""
    out = git.run(*DIFF_ARGS, "--raw", "-z", old, new, env=env)
    fields = out.split(b"\0")
    entries: list[tuple[str, str]] = []
    i = 0
    while i < len(fields) and fields[i].startswith(b":"):
        parts = fields[i].decode().split()
        paths = 2 if parts[4][:1] in ("R", "C") else 1  # a rename or copy names both paths
        path = fields[i + paths]
        if parts[1] != GITLINK and set(parts[3]) != {"0"}:
            entries.append((path.decode("utf-8", "surrogateescape"), parts[3]))
        i += 1 + paths
    patch = b"\0".join(fields[i + 1 :])  # the listing ends with an empty field
    if not entries:
        return [], patch
    query = "".join(f"{oid}\n" for _, oid in entries).encode()
    sizes = git.run("cat-file", "--batch-check=%(objectsize)", input=query, env=env).split()
    return [(path, int(size)) for (path, _), size in zip(entries, sizes, strict=True)], patch


def _gitlinks(git: Git, tree: str, env: dict[str, str]) -> dict[str, str]:
    listing = git.run("ls-tree", "-r", "-z", "--full-tree", tree, env=env)
    links: dict[str, str] = {}
    for entry in split_z(listing):
        meta, _, path = entry.partition("\t")
        mode, _, oid = meta.split(" ")
        if mode == GITLINK:
            links[path] = oid
    return links
