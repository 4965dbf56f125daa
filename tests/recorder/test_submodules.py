"""Changes inside submodules travel as a patch per submodule; commits no remote has are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.errors import SnapshotError, SnapshotTooLargeError
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot, TaskSpec
from tests.fixtures.gitrepo import Repo, assert_round_trip, git, make_repo, worktree_state

FILE = ("-c", "protocol.file.allow=always")


def _snap(repo: Repo, **options: object) -> Snapshot:
    return take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions(**options))  # type: ignore[arg-type]


@pytest.fixture
def with_lib(tmp_path: Path) -> tuple[Repo, Path]:
    """A project with a pushed submodule ``vendor/lib`` at its pushed commit."""
    lib = make_repo(tmp_path / "lib-base", name="lib")
    repo = make_repo(tmp_path / "main-base")
    repo.git(*FILE, "submodule", "add", "-q", str(lib.origin), "vendor/lib")
    repo.commit("add lib")
    repo.push()
    return repo, repo.path / "vendor" / "lib"


def _status(path: Path) -> list[str]:
    return Git(path).text("status", "--porcelain", "--untracked-files=all").splitlines()


@pytest.mark.slow
def test_a_clean_pushed_submodule_is_its_commit_alone(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    snap = _snap(repo)
    assert snap.spec.repo.submodules == {"vendor/lib": git(lib, "rev-parse", "HEAD").strip()}
    assert snap.spec.submodule_patches == {} and snap.spec.repo.submodule_trees == {}
    assert snap.spec.version == 1  # readable by agents that predate submodule changes
    assert not snap.spec.repo.dirty


@pytest.mark.slow
def test_edits_untracked_and_binary_files_and_deletions_inside_a_submodule_travel(
    with_lib: tuple[Repo, Path], tmp_path: Path
) -> None:
    repo, lib = with_lib
    (lib / "train.py").write_text("print('edited in the submodule')\n")
    (lib / "data").mkdir()
    (lib / "data" / "weights.bin").write_bytes(bytes(range(256)) * 4)
    git(lib, "rm", "-q", "README.md")
    (lib / "run.sh").write_text("#!/bin/sh\n")
    (lib / "run.sh").chmod(0o755)
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert snap.spec.version == 2 and snap.spec.repo.dirty
    assert set(snap.spec.submodule_patches) == {"vendor/lib"}
    rebuilt = tmp_path / "rebuilt" / "vendor" / "lib"
    assert worktree_state(rebuilt) == worktree_state(lib)
    # uncommitted there, as on the laptop (unstaged, as the superproject's change is too)
    assert _status(rebuilt) == [" D README.md", " M train.py", "?? data/weights.bin", "?? run.sh"]
    assert _status(tmp_path / "rebuilt") == [" M vendor/lib"]


@pytest.mark.slow
def test_nested_submodules_carry_their_changes_and_moved_commits(
    with_lib: tuple[Repo, Path], tmp_path: Path
) -> None:
    repo, lib = with_lib
    inner = make_repo(tmp_path / "inner-base", name="inner")
    first = git(inner.path, "rev-parse", "HEAD").strip()
    inner.write("inner.py", "V = 2\n")
    second = inner.commit("v2")
    inner.push()
    git(lib, *FILE, "submodule", "add", "-q", str(inner.origin), "deps/inner")
    git(lib / "deps" / "inner", "checkout", "-q", first)
    git(lib, "add", "-A")
    git(lib, "commit", "-q", "-m", "add inner at v1")
    git(lib, "push", "-q", "origin", "HEAD")
    repo.commit("lib with inner")
    repo.push()
    deep = lib / "deps" / "inner"
    git(deep, "checkout", "-q", second)  # moved in lib, not committed there
    (deep / "train.py").write_text("edited deep down\n")
    (lib / "notes.txt").write_text("lib's own change\n")
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert set(snap.spec.submodule_patches) == {"vendor/lib", "vendor/lib/deps/inner"}
    rebuilt = tmp_path / "rebuilt" / "vendor" / "lib" / "deps" / "inner"
    assert Git(rebuilt).text("rev-parse", "HEAD") == second
    assert (rebuilt / "train.py").read_text() == "edited deep down\n"


def test_the_size_limits_count_what_submodules_carry(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    (lib / "big.bin").write_bytes(b"\0" * (2 * 1024 * 1024))
    with pytest.raises(SnapshotTooLargeError, match=r"big\.bin"):
        _snap(repo, max_untracked_file_mb=1.0)
    (lib / "big.bin").unlink()
    for n in range(3):
        (lib / f"part{n}.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MB each
    with pytest.raises(SnapshotTooLargeError, match=r"vendor/lib/part"):
        _snap(repo, max_snapshot_mb=2.0)


@pytest.mark.slow
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


def test_a_submodule_not_checked_out_is_its_recorded_commit(with_lib: tuple[Repo, Path]) -> None:
    repo, lib = with_lib
    commit = git(lib, "rev-parse", "HEAD").strip()
    repo.git("submodule", "deinit", "-q", "--force", "vendor/lib")
    assert _snap(repo).spec.repo.submodules == {"vendor/lib": commit}


def test_specs_with_submodule_changes_survive_json_and_check_their_parts(
    with_lib: tuple[Repo, Path],
) -> None:
    repo, lib = with_lib
    (lib / "train.py").write_text("edited\n")
    snap = _snap(repo)
    again = TaskSpec.from_json(snap.spec.to_json())
    assert again == snap.spec
    broken = snap.spec.to_dict()
    broken["repo"]["submodule_trees"] = {}
    with pytest.raises(Exception, match="submodule patches and trees name different paths"):
        TaskSpec.from_dict(broken)
    lacking = snap.to_dict()
    lacking["blobs"] = {}
    with pytest.raises(Exception, match="lacks the blob"):
        Snapshot.from_dict(lacking)
