from __future__ import annotations

import dataclasses
import socket
import sys
import time
from pathlib import Path

import pytest

from overnight.errors import (
    EmptyCommandError,
    NoCommitError,
    NotAGitRepoError,
    SecretEnvError,
    SecretFileError,
    SnapshotError,
    SnapshotTooLargeError,
)
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.gitrepo import Repo, git, git_commands, make_repo

ARGV = ["python", "train.py", "--lr", "0.01", "--epochs=3", "--amp"]


def test_spec_records_repo_command_and_context(repo: Repo) -> None:
    (repo.path / "sub" / "dir").mkdir(parents=True)
    options = SnapshotOptions(
        env=("SEED", "MODE=fast"), note="does warmup help?", tags=("warmup", "a"), name="w1"
    )
    before = time.time()
    snap = take_snapshot(repo.path / "sub" / "dir", ARGV, options, {"SEED": "7", "USER": "ada"})
    spec = snap.spec
    assert spec.repo.commit == repo.git("rev-parse", "HEAD").strip()
    assert spec.repo.url == str(repo.origin)
    assert (spec.repo.remote, spec.repo.branch, spec.repo.dirty) == ("origin", "main", False)
    assert spec.repo.tree == repo.git("rev-parse", "HEAD^{tree}").strip()
    assert spec.patch is None and spec.bundle is None and snap.blobs == {}
    assert spec.argv == tuple(ARGV)
    assert spec.params == {"lr": "0.01", "epochs": "3", "amp": "true"}
    assert spec.env == {"SEED": "7", "MODE": "fast"}
    assert spec.workdir == "sub/dir"
    assert (spec.note, spec.tags, spec.name) == ("does warmup help?", ("warmup", "a"), "w1")
    assert (spec.user, spec.host) == ("ada", socket.gethostname())
    assert before <= spec.created <= time.time()
    assert spec.python == "{}.{}.{}".format(*sys.version_info[:3])


def test_remote_credentials_are_stripped_from_the_spec(repo: Repo) -> None:
    repo.git("remote", "set-url", "origin", "https://ada:ghp_s3cret@git.example/lab/exp.git")
    snap = take_snapshot(repo.path, ARGV, SnapshotOptions())
    assert snap.spec.repo.url == "https://git.example/lab/exp.git"
    assert "s3cret" not in snap.to_json()


@pytest.mark.slow
def test_remote_is_origin_else_the_branch_upstream(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    repo.git("remote", "rename", "origin", "lab")
    repo.git("remote", "add", "aaa", "/elsewhere/aaa.git")
    repo.git("config", "branch.main.remote", "lab")
    assert take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.repo.remote == "lab"
    repo.git("remote", "add", "origin", "/elsewhere/origin.git")
    snap = take_snapshot(repo.path, ARGV, SnapshotOptions())
    assert (snap.spec.repo.remote, snap.spec.repo.url) == ("origin", "/elsewhere/origin.git")


def test_detached_head_has_no_branch(repo: Repo) -> None:
    repo.git("checkout", "-q", "--detach", "HEAD")
    assert take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.repo.branch is None


def test_users_index_and_object_store_are_untouched(repo: Repo) -> None:
    repo.write("train.py", "print('changed')\n")
    repo.write("new/untracked.bin", b"\x00\x01" * 100)
    repo.write("staged.txt", "staged\n")
    repo.git("add", "staged.txt")
    status = repo.git("status", "--porcelain")  # may refresh the index, so before reading it
    index = repo.path / ".git" / "index"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    objects = sorted(p.name for p in (repo.path / ".git" / "objects").rglob("*"))
    snap = take_snapshot(repo.path, ARGV, SnapshotOptions())
    assert snap.spec.repo.dirty and snap.spec.patch is not None
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (repo.path / ".git" / "objects").rglob("*")) == objects
    assert repo.git("status", "--porcelain") == status


def test_not_a_git_repo_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(NotAGitRepoError, match="is not inside a git work tree"):
        take_snapshot(tmp_path, ARGV, SnapshotOptions())


def test_inside_dot_git_is_not_a_work_tree(repo: Repo) -> None:
    with pytest.raises(NotAGitRepoError):
        take_snapshot(repo.path / ".git", ARGV, SnapshotOptions())


def test_repo_without_commit_is_an_error(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(NoCommitError, match=r"no commit yet; commit your code first"):
        take_snapshot(tmp_path, ARGV, SnapshotOptions())


@pytest.mark.parametrize("argv", [[], [""], ["  "]])
def test_empty_command_is_an_error(repo: Repo, argv: list[str]) -> None:
    with pytest.raises(EmptyCommandError, match="no command to record"):
        take_snapshot(repo.path, argv, SnapshotOptions())


def test_secret_env_is_refused(repo: Repo) -> None:
    with pytest.raises(SecretEnvError):
        take_snapshot(repo.path, ARGV, SnapshotOptions(env=("HF_TOKEN",)), {"HF_TOKEN": "x"})
    allowed = SnapshotOptions(env=("HF_TOKEN",), allow_secret_env=True)
    assert take_snapshot(repo.path, ARGV, allowed, {"HF_TOKEN": "x"}).spec.env == {"HF_TOKEN": "x"}


def test_untracked_file_over_its_limit_lists_offenders_and_ways_out(repo: Repo) -> None:
    repo.write("ckpt/model.pt", b"\x00" * (3 * 1024 * 1024))
    repo.write("ckpt/other.pt", b"\x01" * (2 * 1024 * 1024))
    repo.write("small.txt", "ok\n")
    options = SnapshotOptions(max_untracked_file_mb=1)
    with pytest.raises(SnapshotTooLargeError) as info:
        take_snapshot(repo.path, ARGV, options)
    message = str(info.value)
    assert "ckpt/model.pt (3.0 MB), ckpt/other.pt (2.0 MB)" in message
    assert "small.txt" not in message
    for way_out in (".gitignore", "commit", "--max-untracked-file-mb"):
        assert way_out in message
    assert "\n" not in message
    repo.write(".gitignore", "ckpt/\n")
    assert take_snapshot(repo.path, ARGV, options).spec.repo.dirty


@pytest.mark.slow
def test_patch_plus_bundle_over_the_limit_lists_largest(repo: Repo) -> None:
    import os

    repo.write("data/a.bin", os.urandom(700 * 1024))
    repo.commit("unpushed data")
    repo.write("data/b.bin", os.urandom(600 * 1024))
    repo.git("add", "data/b.bin")  # staged, so not "untracked": only the total limit applies
    with pytest.raises(SnapshotTooLargeError) as info:
        take_snapshot(repo.path, ARGV, SnapshotOptions(max_snapshot_mb=1))
    message = str(info.value)
    assert "over the 1 MB limit" in message
    assert "unpushed commits (1, as a bundle)" in message and "data/b.bin" in message
    assert "--max-snapshot-mb" in message
    assert take_snapshot(repo.path, ARGV, SnapshotOptions(max_snapshot_mb=2)).spec.bundle


def test_a_damaged_repository_is_a_snapshot_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, with_origin=False)
    blob = repo.git("rev-parse", "HEAD:README.md").strip()
    (repo.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(SnapshotError, match=f"cannot record the repository at {repo.path}: .*fsck"):
        take_snapshot(repo.path, ARGV, SnapshotOptions())


def test_nested_repository_is_refused(repo: Repo) -> None:
    git(repo.path, "init", "-q", "vendor/lib")
    repo.write("vendor/lib/x.py", "x = 1\n")
    with pytest.raises(Exception, match=r"vendor/lib/ is a separate git repository"):
        take_snapshot(repo.path, ARGV, SnapshotOptions())


def test_options_are_frozen_and_defaulted() -> None:
    options = SnapshotOptions()
    assert (options.max_snapshot_mb, options.max_untracked_file_mb) == (20.0, 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.note = "x"  # type: ignore[misc]


@pytest.mark.slow
@pytest.mark.parametrize("name", [".env", "deploy/id_ed25519", "gcp/credentials.json", ".netrc"])
def test_untracked_secret_files_are_refused_unless_allowed(repo: Repo, name: str) -> None:
    repo.write(name, "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz\n")
    with pytest.raises(SecretFileError, match=rf"untracked file {name} looks like a secret"):
        take_snapshot(repo.path, ARGV, SnapshotOptions())
    allowed = take_snapshot(repo.path, ARGV, SnapshotOptions(allow_secret_files=True))
    assert allowed.spec.patch is not None
    repo.write(".gitignore", f"{name}\n")
    assert take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.patch is not None


def test_uncommitted_lines_holding_credentials_are_refused_unless_allowed(repo: Repo) -> None:
    repo.write("conf/db.yaml", "url: postgres://app:hunter2@db.example/prod\n")
    with pytest.raises(
        SecretFileError, match=r"^conf/db.yaml holds a password in a URL in its uncommitted"
    ):
        take_snapshot(repo.path, ARGV, SnapshotOptions())
    allowed = take_snapshot(repo.path, ARGV, SnapshotOptions(allow_secret_files=True))
    assert allowed.spec.patch is not None


@pytest.mark.slow
def test_unpushed_commits_holding_secrets_are_refused_unless_allowed(repo: Repo) -> None:
    repo.write("deploy/.env", "X=1\n")
    repo.commit("env file, never pushed")
    with pytest.raises(SecretFileError, match=r"^deploy/.env, in unpushed commits, looks like"):
        take_snapshot(repo.path, ARGV, SnapshotOptions())
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.write("conf.py", 'TOKEN = "ghp_' + "a" * 36 + '"\n')
    repo.commit("a token, never pushed")
    with pytest.raises(SecretFileError, match=r"^conf.py holds a GitHub token in unpushed commits"):
        take_snapshot(repo.path, ARGV, SnapshotOptions())
    allowed = take_snapshot(repo.path, ARGV, SnapshotOptions(allow_secret_files=True))
    assert allowed.spec.bundle is not None
    repo.push()
    assert take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.bundle is None


def test_a_snapshot_runs_few_git_commands(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each one costs `overnight enqueue` milliseconds: adding one should be a choice (a count).
    commands = git_commands(monkeypatch)
    assert not take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.repo.dirty
    clean = ["rev-parse", "remote", "rev-list", "rev-parse", "ls-files", "add", "write-tree"]
    assert commands == clean
    commands.clear()
    repo.write("train.py", "print('changed')\n")
    repo.write("notes.txt", "new\n")
    assert take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.repo.dirty
    assert commands == [*clean, "diff-tree", "cat-file"]


def test_branch_and_remote_url_are_read_as_git_names_them(repo: Repo) -> None:
    repo.git("config", "url./elsewhere/.insteadOf", "lab:")
    repo.git("remote", "set-url", "origin", "lab:exp.git")
    repo.git("remote", "set-url", "--push", "origin", "/elsewhere/push.git")
    repo.git("config", "remote.origin.partialclonefilter", "blob:none")
    repo.git("remote", "add", "backup", "/elsewhere/backup.git")
    repo.git("update-ref", "refs/heads/HEAD", "HEAD")  # makes the name HEAD ambiguous
    state = take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.repo
    assert (state.branch, state.remote, state.url) == ("main", "origin", "/elsewhere/exp.git")
    repo.git("update-ref", "-d", "refs/heads/HEAD")
    repo.git("checkout", "-q", "--detach", "HEAD")
    state = take_snapshot(repo.path, ARGV, SnapshotOptions()).spec.repo
    assert (state.branch, state.commit) == (None, repo.git("rev-parse", "HEAD").strip())
