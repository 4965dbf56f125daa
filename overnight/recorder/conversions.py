"""Files a checkout would not write back byte for byte, because ``.gitattributes`` converts them.

git stores a file under ``text``, ``eol``, ``ident`` or ``working-tree-encoding`` as it cleans it
(CRLF normalised to LF, ``$Id$`` collapsed) and a checkout writes its smudged form, which need not
be the bytes the laptop has: a CRLF file under ``* text=auto``, an LF file added under
``eol=crlf``, an unexpanded ``$Id$``. The recorder predicts the agent's checkout of the recorded
tree (its own ``.gitattributes`` only, ``core.eol=lf``; no ``info/attributes`` file, and never a
global or system one: :mod:`overnight.recorder.gitrepo`) and keeps the bytes of each file that
would come back different (:func:`literal_files`); the rebuild checks out every file again and
writes those bytes over theirs (:func:`restore`). Filter drivers (git-lfs) are not predicted:
they run as the agent's git has them. A repo with no ``.gitattributes`` left (and none changed by
its patch) is not looked at: there ``git add`` stores bytes as they are, unless the index still
vouches for a file it cleaned before the last one was removed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from overnight.errors import ReconstructError, SpecError
from overnight.recorder.gitrepo import Git, split_z

CHECKOUT_CONFIG = (("core.attributesFile", "/dev/null"), ("core.eol", "lf"))
"""Settings of the rebuilt repo: its checkouts (the task's own git's too) convert by the recorded
``.gitattributes`` only."""

_ATTRIBUTES = ("text", "eol", "ident", "working-tree-encoding", "filter")
_REGULAR = ("100644", "100755")
# A diff header naming a .gitattributes on either side (a rename names both).
_ATTRIBUTES_CHANGED = re.compile(rb'^diff --git .*/\.gitattributes(?:"| |$)', re.MULTILINE)


def has_attributes(paths: Iterable[str]) -> bool:
    """Whether any of ``paths`` (a tree's files) is a ``.gitattributes`` file."""
    return any(path == ".gitattributes" or path.endswith("/.gitattributes") for path in paths)


def changes_attributes(patch: bytes) -> bool:
    """Whether ``patch`` adds, changes or removes a ``.gitattributes`` file: a checkout of the
    commit converts files otherwise than one of the recorded tree."""
    return _ATTRIBUTES_CHANGED.search(patch) is not None


def literal_files(
    git: Git, env: Mapping[str, str], scratch: Path, tree: str, patch: bytes
) -> bytes:
    """The files of the recorded tree whose bytes here a checkout would not reproduce, encoded
    for :func:`restore`; empty when there are none and the patch changes no ``.gitattributes``.

    ``env`` names the scratch index that holds the recorded ``tree`` and its object
    directories; ``scratch`` is a folder to check files out into. The prediction runs against a
    bare git folder of its own, so the repo's ``info/attributes`` plays no part, as on an agent.
    A file a checkout writes as stored must have its blob's size here, or ``git add`` cleaned
    it (CRLF dropped, ``$Id$`` collapsed: each changes the size), whatever attribute said so;
    no such file is read. Files under a filter driver are left to it (git-lfs: the pointer
    is the blob, the model file is here).
    """
    gitdir = scratch / "attributes.git"
    for sub in ("objects", "refs"):
        (gitdir / sub).mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/none\n")
    trial = {**env, "GIT_DIR": str(gitdir), "GIT_WORK_TREE": str(git.cwd)}
    config = tuple(f"{key}={value}" for key, value in CHECKOUT_CONFIG)
    blobs: dict[str, int] = {}  # path -> size
    for entry in split_z(git.run("ls-tree", "-r", "-l", "-z", "--full-tree", tree, env=trial)):
        meta, _, path = entry.partition("\t")
        mode, _type, _oid, length = meta.split()
        if mode in _REGULAR:
            blobs[path] = int(length)
    listed = b"".join(os.fsencode(path) + b"\0" for path in blobs)
    out = git.run(
        "check-attr", "--cached", "-z", "--stdin", *_ATTRIBUTES, input=listed, env=trial,
        config=config,
    )  # fmt: skip
    attrs: dict[str, dict[str, str]] = {}
    fields = split_z(out)
    for i in range(0, len(fields) - 2, 3):
        attrs.setdefault(fields[i], {})[fields[i + 1]] = fields[i + 2]
    differ: dict[str, bytes] = {}
    smudged: list[str] = []
    for path, size in blobs.items():
        found = attrs.get(path, {})
        if found.get("filter", "unspecified") not in ("unspecified", "unset"):
            continue
        if _smudged(found):
            smudged.append(path)
        elif _size(git.cwd / path) not in (None, size):
            data = _read(git.cwd / path)
            if data is not None:
                differ[path] = data
    if smudged:
        out_dir = scratch / "checkout"
        out_dir.mkdir()
        listed = b"".join(os.fsencode(path) + b"\0" for path in smudged)
        git.run(
            "checkout-index", "-z", "--stdin", f"--prefix={out_dir}/", input=listed, env=trial,
            config=config,
        )  # fmt: skip
        for path in smudged:
            data = _read(git.cwd / path)
            if data is None:
                continue
            if _size(out_dir / path) != len(data) or data != _read(out_dir / path):
                differ[path] = data
    if not differ and not changes_attributes(patch):
        return b""
    return encode(differ)


def _smudged(attrs: Mapping[str, str]) -> bool:
    """Whether a checkout may write a file with these attributes otherwise than its blob: with
    CRLF line ends (``eol=crlf`` on a text file), ``$Id$`` expanded, or in another encoding."""
    text, eol = attrs.get("text", "unspecified"), attrs.get("eol", "unspecified")
    encoding = attrs.get("working-tree-encoding", "unspecified")
    crlf = text != "unset" and eol == "crlf"  # eol alone makes a file text
    return crlf or attrs.get("ident") == "set" or encoding not in ("unspecified", "unset")


def _size(path: Path) -> int | None:
    """The size of the regular file at ``path``; None for anything else or nothing."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _read(path: Path) -> bytes | None:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        return path.read_bytes()
    except OSError:
        return None


def encode(files: Mapping[str, bytes]) -> bytes:
    """The task's blob of literal files: JSON of path -> base64 bytes."""
    data = {path: base64.b64encode(files[path]).decode("ascii") for path in sorted(files)}
    return json.dumps({"files": data}, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, bytes]:
    """The files of a blob :func:`encode` wrote; raises SpecError for anything else."""
    try:
        parsed = json.loads(data)
        files = parsed["files"]
        if not isinstance(files, dict):
            raise TypeError("files")
        decoded = {str(path): base64.b64decode(text, validate=True) for path, text in files.items()}
    except (ValueError, TypeError, KeyError) as exc:
        raise SpecError(
            "task spec's literal files are not a JSON object of path -> base64; "
            "the task was not written by overnight"
        ) from exc
    for path in decoded:
        _check_path(path)
    return decoded


def _check_path(path: str) -> None:
    """Refuse a path that could name anything but a file inside the rebuilt tree. Unlike the
    spec's other paths, any name git can track is allowed (a tab, a backslash): these are the
    tree's own files, and :func:`restore` reaches each through real folders only."""
    parts = path.split("/")
    if (
        "\0" in path
        or any(part in ("", ".", "..") for part in parts)
        or any(part.lower() == ".git" for part in parts)
    ):
        raise SpecError(
            f"task spec field 'literal_files' names the path {path!r}, which is not a "
            "normalised path inside the tree; the task was not written by overnight"
        )


def restore(git: Git, data: bytes) -> None:
    """Check every file of the rebuilt tree out again (so each comes back as the recorder
    predicted), then write the recorded bytes over the files they belong to; their index
    entries keep the recorded blobs.

    A path must name a regular file of the rebuilt tree reached through real folders: a spec
    cannot make the rebuild write through a symbolic link or outside the tree.
    """
    files = decode(data)
    git.run("checkout-index", "--force", "--all")
    for path, content in files.items():
        target = _file_in(git.cwd, path)
        fd = os.open(target, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
    if files:
        _forget_stat(git, files)


def _forget_stat(git: Git, paths: Iterable[str]) -> None:
    """Clear what the index knows of the files at ``paths`` but their blobs: git then compares
    their content, not their size, before calling them modified (a CRLF file is longer than
    the LF blob it cleans to)."""
    wanted = set(paths)
    entries = b""
    for entry in split_z(git.run("ls-files", "-s", "-z")):
        meta, _, path = entry.partition("\t")
        if path in wanted:
            mode, oid, _stage = meta.split(" ")
            entries += f"{mode} {oid}\t".encode() + os.fsencode(path) + b"\0"
    git.run("update-index", "-z", "--index-info", input=entries)


def _file_in(root: Path, path: str) -> Path:
    """``root/path`` if it is a regular file reached through real folders; ReconstructError
    otherwise."""
    parts = path.split("/")
    target = root
    for i, part in enumerate(parts):
        target = target / part
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            mode = 0
        expected = stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)
        if not expected:
            raise ReconstructError(
                f"task spec field 'literal_files' names {path!r}, which is not a file of the "
                "rebuilt tree; the task spec is inconsistent"
            )
    return target
