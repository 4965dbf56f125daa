from __future__ import annotations

from pathlib import Path

import pytest

from overnight.errors import MissingScriptError, SnapshotError
from overnight.recorder.commandfiles import (
    RecordedTree,
    Workdir,
    check_command,
    script_of,
    script_path,
)
from overnight.recorder.snapshot import SnapshotOptions, record
from tests.fixtures.gitrepo import Repo


@pytest.mark.parametrize(
    ("argv", "script"),
    [
        (["python", "train.py", "--lr", "1"], "train.py"),
        (["python3.11", "-u", "-W", "ignore", "exp/train.py"], "exp/train.py"),
        ([".venv/bin/python", "-X", "dev", "train.py"], "train.py"),
        (["python", "-m", "exp.train"], None),
        (["python", "-c", "print(1)"], None),
        (["bash", "run.sh", "x"], "run.sh"),
        (["sh", "-c", "echo hi"], None),
        (["./run.sh", "--fast"], "./run.sh"),
        (["torchrun", "--nproc-per-node", "2", "train.py", "--cfg", "a.py"], "train.py"),
        (["accelerate", "launch", "--config_file=c.yaml", "exp/ft.py"], "exp/ft.py"),
        (["make", "train"], None),
    ],
)
def test_the_script_a_command_runs(argv: list[str], script: str | None) -> None:
    assert script_of(argv) == script


def _where(repo: Repo, sub: str = "") -> tuple[Workdir, RecordedTree]:
    """Where a command runs (``sub`` of the repo) and the tree a snapshot records there."""
    tree = record(repo.path, ["python", "train.py"], SnapshotOptions()).tree
    return Workdir(repo.path / sub if sub else repo.path, repo.path), tree


def test_a_missing_script_is_an_error_naming_the_closest_file(repo: Repo) -> None:
    repo.write("exp/train.py", "print(1)\n")
    where, tree = _where(repo)
    with pytest.raises(MissingScriptError) as caught:
        check_command(["python", "exp/trian.py", "--lr", "1"], where, tree)
    assert str(caught.value) == (
        "the command's script exp/trian.py does not exist in the repository root (where the "
        "command runs); did you mean exp/train.py?"
    )
    assert isinstance(caught.value, SnapshotError)
    sub, tree = _where(repo, "exp")
    with pytest.raises(MissingScriptError, match=r"does not exist in exp/ .*; check the name"):
        check_command(["python", "eval.py"], sub, tree)
    assert check_command(["python", "train.py"], sub, tree) == []


def test_an_tree_script_is_an_error(repo: Repo) -> None:
    repo.write(".gitignore", "scratch/\n")
    repo.write("scratch/try.py", "print(1)\n")
    where, tree = _where(repo)
    with pytest.raises(MissingScriptError, match=r"script scratch/try.py is ignored by git"):
        check_command(["python", "scratch/try.py"], where, tree)


def test_files_the_worker_will_not_have_are_warned_about(repo: Repo, tmp_path: Path) -> None:
    repo.write(".gitignore", "data/\n*.ckpt\n")
    repo.write("data/train.csv", "a,b\n")
    repo.write("exp/last.ckpt", "weights")
    repo.write("exp/config.yaml", "lr: 1\n")
    where, tree = _where(repo, "exp")
    argv = [
        "python", "../train.py", "--data=../data/train.csv", "--resume", "last.ckpt",
        "--cfg", "config.yaml", "--home", "~/datasets/x", f"--abs={repo.path}/exp/config.yaml",
        "--shared", "/mnt/lab/imagenet", "ds.root=../../elsewhere", "--log", "/tmp/log.txt",
        "--hub", "meta-llama/Llama-3-8B", "--url", "s3://bucket/x", "--out", "runs/new",
    ]  # fmt: skip
    warnings = check_command(argv, where, tree)
    assert warnings == [
        "the command names ../data/train.csv, which git ignores: it is not recorded, so the "
        "worker will not have it; commit it, or read it from a path the worker has",
        "the command names last.ckpt, which git ignores: it is not recorded, so the worker will "
        "not have it; commit it, or read it from a path the worker has",
        "the command names ~/datasets/x: ~ is the home folder of whoever runs it, on the worker "
        "the agent's; name a path the worker has, or a file of the repository",
        f"the command names {repo.path}/exp/config.yaml, an absolute path into this repository; "
        "the worker rebuilds it elsewhere: name it config.yaml",
        "the command names /mnt/lab/imagenet, an absolute path: the worker must have it at the "
        "same place (a shared mount), or the task will not find it",
        "the command names ../../elsewhere, outside the repository: the worker has only the "
        "repository's files",
    ]


def test_the_scripts_file_in_the_repository(repo: Repo) -> None:
    repo.write("exp/train.py", "print(1)\n")
    repo.write("pkg/cli/__main__.py", "print(1)\n")
    where = Workdir(repo.path, repo.path)
    assert script_path(["python", "exp/train.py"], where) == repo.path / "exp" / "train.py"
    assert script_path(["python", "-u", "-m", "exp.train"], where) == repo.path / "exp/train.py"
    assert script_path(["python", "-m", "pkg.cli"], where) == repo.path / "pkg/cli/__main__.py"
    assert script_path(["python", "-m", "json.tool"], where) is None  # not the repository's
    assert script_path(["python", "/elsewhere/train.py"], where) is None
    assert script_path(["python", "../train.py"], where) is None
    assert script_path(["python", "exp/gone.py"], where) is None
    sub = Workdir(repo.path / "exp", repo.path)
    assert script_path(["python", "../train.py"], sub) == repo.path / "train.py"


def test_a_file_git_tracks_despite_gitignore_is_recorded(repo: Repo) -> None:
    repo.write(".gitignore", "*.csv\n")
    repo.write("data/small.csv", "a\n")
    repo.git("add", "-f", "data/small.csv")
    repo.write("data/big.csv", "b\n")
    where, tree = _where(repo)
    assert check_command(["python", "train.py", "data/small.csv", "data"], where, tree) == []
    [warning] = check_command(["python", "train.py", "data/big.csv"], where, tree)
    assert warning.startswith("the command names data/big.csv, which git ignores")
