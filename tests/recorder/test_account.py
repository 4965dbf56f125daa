from __future__ import annotations

import pytest

from overnight.errors import MissingScriptError
from overnight.recorder.account import review
from overnight.recorder.snapshot import SnapshotOptions, record
from tests.fixtures.gitrepo import Repo, count_git_commands


def test_the_account_tells_what_was_recorded_and_left_out(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write(".gitignore", "data/\n*.pt\n")
    repo.write("requirements.txt", "numpy==2.0\n")
    repo.commit("ignore data")  # not pushed: bundled
    repo.write("data/train.csv", "a,b\n")
    repo.write("model.pt", b"\0" * 3000)
    repo.write("train.py", "print('changed')\n")
    repo.write("notes.txt", "n\n")
    recording = record(repo.path, ["python", "train.py"], SnapshotOptions())
    commands = count_git_commands(monkeypatch)
    told = review(recording)
    commit = repo.git("rev-parse", "HEAD")[:10]
    patch = recording.snapshot.spec.patch
    assert patch is not None
    assert told.account == (
        f"recorded {commit} on main with 1 unpushed commit; uncommitted: 2 files, patch of "
        f"{patch.size} B; untracked recorded: notes.txt; ignored, left out: 2 (data/, model.pt "
        "2.9 KB); requirements: requirements.txt"
    )
    assert told.warnings == ()
    assert commands == ["ls-files"]  # the ignored files' listing, and nothing else
    commands.clear()
    assert review(recording, quiet=True).account is None
    assert commands == []  # quiet: no git command at all


def test_a_clean_tree_and_a_freeze(repo: Repo) -> None:
    told = review(record(repo.path, ["python", "train.py"], SnapshotOptions()))
    assert told.account is not None
    assert told.account.endswith("on main; no uncommitted change; requirements: freeze")
    [note] = told.warnings
    assert note.startswith("no requirements file from the repository root")


def test_warnings_name_the_files_the_worker_will_not_have(repo: Repo) -> None:
    repo.write(".gitignore", "data/\n")
    repo.write("data/train.csv", "a,b\n")
    recording = record(repo.path, ["python", "train.py", "data/train.csv"], SnapshotOptions())
    told = review(recording, quiet=True)
    assert told.warnings[-1].startswith("the command names data/train.csv, which git ignores")
    missing = record(repo.path, ["python", "tran.py"], SnapshotOptions())
    with pytest.raises(MissingScriptError, match=r"did you mean train\.py"):
        review(missing)
