from __future__ import annotations

import os
from pathlib import Path

import pytest

from overnight.recorder.gitrepo import Git
from overnight.recorder.patch import capture
from tests.fixtures.gitrepo import Repo, assert_round_trip

HOSTILE = """
[diff]
\tnoprefix = true
\tmnemonicprefix = true
\texternal = /bin/false
\trenames = copies
\tsubmodule = log
\tcontext = 0
\trelative = true
\talgorithm = patience
[color]
\tui = always
\tdiff = always
[core]
\tautocrlf = true
\tsafecrlf = true
\tquotepath = true
\thooksPath = {hooks}
\tpager = false
[apply]
\twhitespace = error
[status]
\tshowUntrackedFiles = no
[advice]
\tdetachedHead = true
[add]
	ignoreErrors = true
[clone]
	defaultRemoteName = upstream
[submodule]
	recurse = true
[alias]
\tdiff = !echo hijacked
\tadd = !false
\tapply = !false
\tclone = !false
"""


def _changes(repo: Repo) -> None:
    repo.write("crlf.txt", b"one\r\ntwo\r\n")
    repo.write("trailing.txt", "spaces   \nend\t\n")
    repo.commit("pushed later")
    repo.push()
    repo.write("crlf.txt", b"one\r\ntwo\r\nthree\r\n")
    repo.write("trailing.txt", "spaces   \nmore   \nend\t\n")
    repo.write("blob.bin", bytes(range(256)) * 4)
    repo.write("ünï cødé/new file.txt", "hello\n")
    repo.write("train.py", "print('edited')   \n")
    (repo.path / "train.py").chmod(0o755)
    os.symlink("train.py", repo.path / "link")
    repo.git("mv", "README.md", "docs.md")


def _capture(repo: Repo) -> tuple[str, bytes]:
    tree = capture(Git(repo.path), max_untracked_file_mb=5, max_snapshot_mb=20)
    return tree.tree, tree.patch


@pytest.mark.slow
def test_users_git_config_does_not_change_the_patch(
    repo: Repo, tmp_path: Path, _isolated_git_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _changes(repo)
    clean = _capture(repo)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for hook in ("post-checkout", "pre-commit", "post-merge"):
        (hooks / hook).write_text("#!/bin/sh\nexit 1\n")
        (hooks / hook).chmod(0o755)
    with _isolated_git_config.open("a") as fh:
        fh.write(HOSTILE.format(hooks=hooks))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.autocrlf'='true' 'diff.noprefix'='true'")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.quotepath")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    plain = repo.git("diff", "--no-ext-diff", "--no-color", "train.py")
    assert "diff --git train.py train.py" in plain  # the hostile config is in effect
    assert _capture(repo) == clean
    assert b"a/blob.bin" in clean[1] and b"\x1b[" not in clean[1]
    # The rebuild runs under the same hostile configuration (an agent's own settings).
    assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert Git(tmp_path / "rebuilt").text("remote") == "origin"


@pytest.mark.parametrize("setting", ["core.autocrlf=true", "core.autocrlf=input"])
def test_crlf_bytes_survive_autocrlf(repo: Repo, tmp_path: Path, setting: str) -> None:
    key, value = setting.split("=")
    repo.git("config", key, value)
    repo.write("windows.txt", b"a\r\nb\r\n")
    repo.write("mixed.txt", b"a\nb\r\nc")
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / "windows.txt").read_bytes() == b"a\r\nb\r\n"
    assert snap.spec.repo.dirty


def test_assume_unchanged_files_are_recorded_as_they_are(repo: Repo, tmp_path: Path) -> None:
    repo.git("update-index", "--assume-unchanged", "train.py")
    repo.write("train.py", "print('hidden edit')\n")
    assert repo.git("status", "--porcelain") == ""
    assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / "train.py").read_text() == "print('hidden edit')\n"


def test_clean_tree_has_no_patch(repo: Repo) -> None:
    tree, patch = _capture(repo)
    assert patch == b""
    assert tree == repo.git("rev-parse", "HEAD^{tree}").strip()


def test_changed_files_carry_their_new_size_renamed_ones_at_their_new_path(repo: Repo) -> None:
    lines = "".join(f"line {i}\n" for i in range(200))
    repo.write("data/old.txt", lines)
    repo.commit("data")
    repo.git("mv", "data/old.txt", "data/new.txt")
    repo.write("data/new.txt", lines + "one more\n")
    (repo.path / "README.md").unlink()
    repo.write("notes.bin", b"\x00\x01\x02")
    tree = capture(Git(repo.path), max_untracked_file_mb=5, max_snapshot_mb=20)
    assert b"rename from data/old.txt\nrename to data/new.txt\n" in tree.patch
    assert b"deleted file mode" in tree.patch and tree.patch.startswith(b"diff --git ")
    assert tree.changed == [("data/new.txt", len(lines) + 9), ("notes.bin", 3)]
