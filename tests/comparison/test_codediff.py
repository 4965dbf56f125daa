"""Trees rebuilt from snapshots of real repos, and diffed, in a throwaway repository."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from overnight.comparison.codediff import FileChange, TreeBuilder
from overnight.errors import LocalRepoError, ReconstructError
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot
from tests.fixtures.gitrepo import Repo, git, make_repo

pytestmark = pytest.mark.slow  # real repos, snapshots and git in every test

IDS = ("aaaa", "bbbb")


def snap(repo: Repo) -> Snapshot:
    return take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions())


def test_same_commit_needs_no_fetch_when_the_repository_has_it(repo: Repo) -> None:
    repo.write("train.py", "print(1)\n")
    a = snap(repo)
    repo.write("train.py", "print(2)\n")
    b = snap(repo)
    assert repo.origin is not None
    shutil.rmtree(repo.origin)  # nothing could be fetched
    with TreeBuilder(local_repo=repo.path) as trees:
        diff = trees.diff(a, b, IDS)
        assert trees.fetches == 0
    assert diff.files == (FileChange("train.py", None, 1, 1),)
    assert "-print(1)\n+print(2)\n" in diff.patch
    assert (diff.commits.old, diff.commits.ahead, diff.commits.behind) == (a.spec.repo.commit, 0, 0)


def test_equal_recorded_trees_are_not_rebuilt(repo: Repo) -> None:
    a = snap(repo)
    fake = dataclasses.replace(a.spec.repo, commit="1" * 40)  # a commit nobody has
    b = Snapshot(dataclasses.replace(a.spec, repo=fake), a.blobs)
    with TreeBuilder() as trees:
        diff = trees.diff(a, b, IDS)
    assert not diff.changed and diff.files == () and diff.patch == ""


def test_a_missing_commit_is_fetched_from_the_remote(repo: Repo, tmp_path: Path) -> None:
    old = snap(repo)
    repo.write("train.py", "print('new')\n")
    repo.commit("Print new")
    repo.push()
    new = snap(repo)
    with TreeBuilder(local_repo=tmp_path, allow_local=True) as trees:  # tmp_path: no repository
        diff = trees.diff(new, old, IDS)  # newer first: the baseline is ahead
        assert trees.fetches == 1
    assert (diff.commits.ahead, diff.commits.behind) == (0, 1)
    assert diff.commits.subjects == ()
    assert "+print('args', sys.argv[1:])\n" in diff.patch


def test_commits_only_in_bundles_need_no_remote(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "src", with_origin=False)
    a = snap(repo)
    repo.write("model.py", "LAYERS = 3\n")
    repo.commit("Add the model")
    b = snap(repo)
    assert a.spec.bundle is not None and b.spec.bundle is not None
    shutil.rmtree(repo.path)
    with TreeBuilder() as trees:
        diff = trees.diff(a, b, IDS)
        assert trees.fetches == 0
    assert diff.files == (FileChange("model.py", None, 1, 0),)
    assert diff.commits.ahead == 1 and diff.commits.subjects[0].endswith(" Add the model")


def test_renames_and_changed_binary_files(repo: Repo) -> None:
    repo.write("logo.png", b"\x89PNG\x00one")
    repo.write("notes/long.txt", "".join(f"line {i}\n" for i in range(20)))
    repo.commit("assets")
    a = snap(repo)
    repo.write("logo.png", b"\x89PNG\x00two")
    repo.git("mv", "notes/long.txt", "notes/moved.txt")
    b = snap(repo)
    with TreeBuilder(local_repo=repo.path) as trees:
        diff = trees.diff(a, b, IDS)
    assert diff.files == (
        FileChange("logo.png", None, None, None),
        FileChange("notes/moved.txt", "notes/long.txt", 0, 0),
    )
    assert "Binary files a/logo.png and b/logo.png differ\n" in diff.patch
    assert "rename from notes/long.txt\nrename to notes/moved.txt\n" in diff.patch
    assert "PNG" not in diff.patch


def test_a_spec_whose_tree_does_not_match_is_refused(repo: Repo) -> None:
    a = snap(repo)
    repo.write("train.py", "print(2)\n")
    b = snap(repo)
    lying = dataclasses.replace(b.spec.repo, tree="2" * 40)
    with TreeBuilder(local_repo=repo.path) as trees, pytest.raises(ReconstructError) as err:
        trees.diff(a, Snapshot(dataclasses.replace(b.spec, repo=lying), b.blobs), IDS)
    assert str(err.value).startswith("task bbbb: the rebuilt tree ")
    assert "the task spec is inconsistent" in str(err.value)


def test_a_commit_found_nowhere_is_named(repo: Repo, tmp_path: Path) -> None:
    a = snap(repo)
    repo.write("train.py", "print(2)\n")
    repo.commit("unpushed, and its bundle dropped")
    b = snap(repo)
    b = Snapshot(dataclasses.replace(b.spec, bundle=None), b.blobs)
    trees = TreeBuilder(local_repo=tmp_path, allow_local=True)
    with trees, pytest.raises(ReconstructError) as err:
        trees.diff(a, b, IDS)
    commit = b.spec.repo.commit[:7]
    assert str(err.value) == (
        f"task bbbb: commit {commit} is not in this repository, in the task's bundle nor on "
        f"{repo.origin}; run compare in a clone that has it"
    )


def test_a_local_remote_is_not_fetched_unless_allowed(repo: Repo, tmp_path: Path) -> None:
    a = snap(repo)
    unrecorded = dataclasses.replace(a.spec.repo, tree=None)  # so the tree must be rebuilt
    b = Snapshot(dataclasses.replace(a.spec, repo=unrecorded), a.blobs)
    with TreeBuilder(local_repo=tmp_path) as trees, pytest.raises(LocalRepoError) as err:
        trees.diff(a, b, IDS)
    assert "is a local path" in str(err.value) and trees.fetches == 0


def test_the_throwaway_repository_is_removed(repo: Repo) -> None:
    trees = TreeBuilder(local_repo=repo.path)
    folder = trees.git.cwd
    assert folder.is_dir()
    trees.close()
    assert not folder.exists()


def test_a_shallow_clone_lends_its_commits_without_their_history(
    repo: Repo, tmp_path: Path
) -> None:
    repo.git("checkout", "-q", "-b", "side")
    repo.write("side.txt", "side\n")
    repo.commit("side")
    a = snap(repo)
    repo.git("push", "-q", "origin", "side")
    repo.git("checkout", "-q", "main")
    repo.write("main.txt", "main\n")
    repo.commit("main")
    repo.push()
    b = snap(repo)
    shallow = tmp_path / "shallow"
    url = f"file://{repo.origin}"
    git(tmp_path, "clone", "-q", "--depth", "1", "--no-single-branch", url, str(shallow))
    with TreeBuilder(local_repo=shallow) as trees:
        diff = trees.diff(a, b, IDS)
        assert trees.fetches == 0
    assert (diff.commits.ahead, diff.commits.behind) == (None, None)
    assert [f.path for f in diff.files] == ["main.txt", "side.txt"]
