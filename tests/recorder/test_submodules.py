"""Submodules whose state would not travel are refused at snapshot time, naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.errors import SnapshotError
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot
from tests.fixtures.gitrepo import Repo, git, make_repo

FILE = ("-c", "protocol.file.allow=always")


def _snap(repo: Repo) -> Snapshot:
    return take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions())


@pytest.fixture
def with_lib(tmp_path: Path) -> tuple[Repo, Path]:
    """A project with a pushed submodule ``vendor/lib`` at its pushed commit."""
    lib = make_repo(tmp_path / "lib-base", name="lib")
    repo = make_repo(tmp_path / "main-base")
    repo.git(*FILE, "submodule", "add", "-q", str(lib.origin), "vendor/lib")
    repo.commit("add lib")
    repo.push()
    return repo, repo.path / "vendor" / "lib"


def test_a_clean_pushed_submodule_is_recorded(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    snap = _snap(repo)
    assert snap.spec.repo.submodules == {"vendor/lib": git(lib, "rev-parse", "HEAD").strip()}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda lib: (lib / "train.py").write_text("edited\n"), "1 path: train.py"),
        (lambda lib: (lib / "data" / "new.bin").parent.mkdir() or (lib / "data" / "new.bin").write_bytes(b"\0"), "1 path: data/new.bin"),
        (lambda lib: git(lib, "rm", "-q", "README.md"), "1 path: README.md"),
    ],
)  # fmt: skip
def test_uncommitted_changes_inside_a_submodule_are_refused(
    with_lib: tuple[Repo, Path],
    change,
    named: str,  # type: ignore[no-untyped-def]
) -> None:
    repo, lib = with_lib
    change(lib)
    with pytest.raises(SnapshotError) as caught:
        _snap(repo)
    message = str(caught.value)
    assert message.startswith("submodule vendor/lib has uncommitted changes (")
    assert named in message and "git -C vendor/lib stash -u" in message
    assert "\n" not in message


def test_many_changes_are_counted_and_a_few_named(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    for n in range(5):
        (lib / f"f{n}.txt").write_text("x\n")
    with pytest.raises(SnapshotError, match=r"\(5 paths: f0.txt, f1.txt, f2.txt, \.\.\.\)"):
        _snap(repo)


def test_a_submodule_commit_its_remote_lacks_is_refused(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    (lib / "train.py").write_text("local only\n")
    git(lib, "commit", "-q", "-am", "not pushed")
    with pytest.raises(
        SnapshotError, match=r"which none of its remote branches has.*git -C vendor/lib push"
    ):
        _snap(repo)
    git(lib, "push", "-q", "origin", "HEAD:refs/heads/feature")
    assert _snap(repo).spec.repo.submodules["vendor/lib"] == git(lib, "rev-parse", "HEAD").strip()


def test_a_nested_submodules_change_is_refused_at_the_top(
    tmp_path: Path, with_lib: tuple[Repo, Path]
) -> None:
    repo, lib = with_lib
    inner = make_repo(tmp_path / "inner-base", name="inner")
    git(lib, *FILE, "submodule", "add", "-q", str(inner.origin), "deps/inner")
    git(lib, "commit", "-q", "-m", "add inner")
    git(lib, "push", "-q", "origin", "HEAD")
    repo.commit("lib with inner")
    repo.push()
    _snap(repo)  # clean all the way down
    (lib / "deps" / "inner" / "train.py").write_text("edited deep down\n")
    with pytest.raises(
        SnapshotError, match=r"submodule vendor/lib has uncommitted changes \(1 path: deps/inner\)"
    ):
        _snap(repo)


def test_a_submodule_not_checked_out_is_its_recorded_commit(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    commit = git(lib, "rev-parse", "HEAD").strip()
    repo.git("submodule", "deinit", "-q", "--force", "vendor/lib")
    assert _snap(repo).spec.repo.submodules == {"vendor/lib": commit}
