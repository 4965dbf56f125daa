"""agent/treecopy.py: a copy shares no file with its tree, and any change to the tree shows."""

from __future__ import annotations

import os
from pathlib import Path

from overnight.agent.workspace.treecopy import copy_tree, fingerprint, unshare


def _tree(root: Path) -> Path:
    (root / ".git" / "objects" / "pack").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    pack = root / ".git" / "objects" / "pack" / "pack-1.pack"
    pack.write_bytes(b"PACK")
    pack.chmod(0o444)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("run.sh")
    return root


def test_a_copy_is_its_own_and_reports_the_trees_fingerprint(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    built = fingerprint(tree)
    assert copy_tree(tree, tmp_path / "copy") == built
    pack = tmp_path / "copy" / ".git" / "objects" / "pack" / "pack-1.pack"
    assert pack.stat().st_nlink == 1 and pack.stat().st_mode & 0o777 == 0o444
    assert (tmp_path / "copy" / "run.sh").stat().st_mode & 0o111
    assert os.readlink(tmp_path / "copy" / "link") == "run.sh"
    pack.chmod(0o644)
    with pack.open("ab") as fh:  # what a task may do to its copy
        fh.write(b"junk")
    assert fingerprint(tree) == built


def test_a_change_with_its_times_put_back_still_shows(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    built = fingerprint(tree)
    script = tree / "run.sh"
    before = script.stat()
    script.write_text("#!/bin/sh\n")  # same size, same content
    os.utime(script, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert fingerprint(tree) != built


def test_unshare_gives_hard_linked_files_their_own_inode(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    outside = tmp_path / "mirror.pack"
    os.link(tree / ".git" / "objects" / "pack" / "pack-1.pack", outside)
    unshare(tree)
    own = tree / ".git" / "objects" / "pack" / "pack-1.pack"
    assert own.stat().st_nlink == 1 and outside.stat().st_nlink == 1
    assert own.read_bytes() == b"PACK" and own.stat().st_mode & 0o777 == 0o444
