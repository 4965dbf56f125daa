from __future__ import annotations

from overnight.recorder.gitrepo import Git
from overnight.recorder.ignored import IgnoredEntry, IgnoredFiles
from tests.fixtures.gitrepo import Repo


def test_ignored_files_and_folders_are_listed_biggest_first(repo: Repo) -> None:
    repo.write(".gitignore", ".venv/\ndata/\n*.bin\n*.log\n__pycache__/\n")
    repo.commit("ignore")
    for i in range(50):
        repo.write(f".venv/lib/m{i}.py", "x")  # one entry, however many files it holds
    repo.write("data/raw/a.csv", "a")
    repo.write("big.bin", b"\0" * 5000)
    repo.write("small.bin", b"\0" * 10)
    repo.write("exp/run.log", "x" * 700)
    repo.write("exp/__pycache__/m.cpython-311.pyc", b"\0" * 9000)
    repo.write("exp/kept.txt", "not ignored\n")  # else git names exp/, wholly ignored
    ignored = IgnoredFiles(Git(repo.path))
    assert sorted(e.path for e in ignored.entries) == [
        ".venv/", "big.bin", "data/", "exp/__pycache__/", "exp/run.log", "small.bin",
    ]  # fmt: skip
    assert ignored.biggest(4) == [
        IgnoredEntry(".venv/", None),
        IgnoredEntry("data/", None),
        IgnoredEntry("big.bin", 5000),
        IgnoredEntry("exp/run.log", 700),
    ]  # bytecode caches are counted, never named


def test_the_listing_is_one_git_command_run_on_first_use(repo: Repo) -> None:
    git = Git(repo.path)
    ignored = IgnoredFiles(git)
    repo.write(".gitignore", "*.bin\n")
    repo.write("a.bin", "x")
    assert [e.path for e in ignored.entries] == ["a.bin"]
    repo.write("b.bin", "x")
    assert [e.path for e in ignored.entries] == ["a.bin"]  # listed once
