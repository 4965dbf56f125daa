from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from overnight.errors import ReconstructError
from overnight.recorder.checkout import reconstruct
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot
from tests.fixtures.escapes import aimed_at, make_canary, with_submodule
from tests.fixtures.gitrepo import Repo, assert_round_trip, git, make_repo, worktree_state

pytestmark = pytest.mark.slow


def _snap(repo: Repo) -> Snapshot:
    return take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions())


def _with_repo(snap: Snapshot, **changes: object) -> Snapshot:
    repo = dataclasses.replace(snap.spec.repo, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(snap, spec=dataclasses.replace(snap.spec, repo=repo))


def test_rebuild_shows_the_change_as_uncommitted(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('edited')\n")
    repo.write("notes/new.md", "untracked\n")
    assert_round_trip(repo.path, tmp_path / "rebuilt")
    status = Git(tmp_path / "rebuilt").text("status", "--porcelain")
    assert status.splitlines() == [" M train.py", "?? notes/"]
    branch = Git(tmp_path / "rebuilt").text("symbolic-ref", "--short", "HEAD")
    assert branch == "main"
    origin = Git(tmp_path / "rebuilt").text("remote", "get-url", "origin")
    assert origin == str(repo.origin)


def test_clone_from_another_source_keeps_the_recorded_remote(repo: Repo, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(repo.origin), str(mirror))
    repo.write("train.py", "print('edited')\n")
    assert_round_trip(repo.path, tmp_path / "rebuilt", source=str(mirror))
    origin = Git(tmp_path / "rebuilt").text("remote", "get-url", "origin")
    assert origin == str(repo.origin)


def test_commit_missing_without_bundle_is_named(repo: Repo, tmp_path: Path) -> None:
    repo.write("x.py", "x = 1\n")
    commit = repo.commit("never pushed")
    snap = _snap(repo)
    stripped = dataclasses.replace(snap, spec=dataclasses.replace(snap.spec, bundle=None))
    with pytest.raises(ReconstructError) as info:
        reconstruct(stripped, tmp_path / "rebuilt")
    assert str(info.value).startswith(
        f"commit {commit[:7]} is no longer on origin ({repo.origin}): no branch or tag holds it"
    )
    assert "push it again" in str(info.value)
    assert not (tmp_path / "rebuilt").exists()


def test_a_commit_force_pushed_off_its_branch_is_fetched_by_its_id(
    repo: Repo, tmp_path: Path
) -> None:
    repo.write("train.py", "print('pushed')\n")
    repo.commit("pushed")
    repo.push()
    snap = _snap(repo)
    assert snap.spec.bundle is None
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.commit("the rewritten history")
    repo.git("push", "-q", "--force", "origin", "HEAD")
    reconstruct(snap, tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / "train.py").read_text() == "print('pushed')\n"


def test_patch_that_does_not_apply_names_gits_error(repo: Repo, tmp_path: Path) -> None:
    old = repo.git("rev-parse", "HEAD").strip()
    repo.write("train.py", "print('v2')\n")
    repo.commit("v2")
    repo.push()
    repo.write("train.py", "print('v3')\n")
    snap = _with_repo(_snap(repo), commit=old)
    with pytest.raises(ReconstructError) as info:
        reconstruct(snap, tmp_path / "rebuilt")
    assert str(info.value) == f"patch does not apply to {old[:7]}: patch failed: train.py:1"


def test_unreachable_remote_is_named(repo: Repo, tmp_path: Path) -> None:
    snap = _with_repo(_snap(repo), url=str(tmp_path / "gone.git"))
    with pytest.raises(ReconstructError, match=rf"^cannot reach {tmp_path / 'gone.git'}: "):
        reconstruct(snap, tmp_path / "rebuilt")


def test_https_remote_without_credentials_fails_fast_naming_the_host(
    repo: Repo, tmp_path: Path
) -> None:
    snap = _with_repo(_snap(repo), url="https://127.0.0.1:9/lab/private.git")
    with pytest.raises(ReconstructError, match=r"cannot reach https://127\.0\.0\.1:9/lab/private"):
        reconstruct(snap, tmp_path / "rebuilt")


def test_inconsistent_tree_is_detected(repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('edited')\n")
    snap = _with_repo(_snap(repo), tree="0" * 40)
    with pytest.raises(ReconstructError, match="differs from the recorded tree 000000000000"):
        reconstruct(snap, tmp_path / "rebuilt")


def test_a_failing_git_step_is_a_reconstruct_error(repo: Repo, tmp_path: Path) -> None:
    snap = _with_repo(_snap(repo), branch="bad..name")  # a spec no git would have written
    with pytest.raises(ReconstructError, match=r"cannot rebuild [0-9a-f]{7} at .*bad\.\.name"):
        reconstruct(snap, tmp_path / "rebuilt")
    assert not (tmp_path / "rebuilt").exists()


def test_dest_must_be_new_or_empty(repo: Repo, tmp_path: Path) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "file").write_text("x")
    with pytest.raises(ReconstructError, match="already exists and is not an empty folder"):
        reconstruct(_snap(repo), dest)
    empty = tmp_path / "empty"
    empty.mkdir()
    reconstruct(_snap(repo), empty)
    assert (empty / "train.py").exists()


def test_failure_leaves_an_existing_empty_dest_empty(repo: Repo, tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    snap = _with_repo(_snap(repo), url=str(tmp_path / "gone.git"))
    with pytest.raises(ReconstructError):
        reconstruct(snap, dest)
    assert dest.is_dir() and not any(dest.iterdir())


def test_submodule_commits_are_checked_out(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib-base", name="lib")
    first = lib.git("rev-parse", "HEAD").strip()
    lib.write("lib.py", "VERSION = 2\n")
    second = lib.commit("v2")
    lib.push()
    repo = make_repo(tmp_path / "main-base")
    repo.git(
        "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib.origin), "vendor/lib"
    )
    git(repo.path / "vendor" / "lib", "checkout", "-q", first)
    repo.commit("add lib at v1")
    repo.push()
    git(repo.path / "vendor" / "lib", "checkout", "-q", second)  # moved, not committed
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert snap.spec.repo.submodules == {"vendor/lib": second}
    rebuilt = tmp_path / "rebuilt" / "vendor" / "lib"
    assert Git(rebuilt).text("rev-parse", "HEAD") == second
    assert worktree_state(rebuilt) == worktree_state(repo.path / "vendor" / "lib")


def test_json_file_round_trip_preserves_binary_bytes(repo: Repo, tmp_path: Path) -> None:
    payload = bytes(range(256)) + b"\x00" * 10 + os.urandom(1000)
    repo.write("weights.bin", payload)
    snap = _snap(repo)
    spec_file = tmp_path / "task.json"
    spec_file.write_text(snap.to_json())
    reconstruct(Snapshot.from_json(spec_file.read_text()), tmp_path / "rebuilt")
    assert (tmp_path / "rebuilt" / "weights.bin").read_bytes() == payload


def test_linked_worktree_round_trips(repo: Repo, tmp_path: Path) -> None:
    repo.git("worktree", "add", "-q", "-b", "side", str(tmp_path / "side"))
    (tmp_path / "side" / "train.py").write_text("print('side')\n")
    (tmp_path / "side" / "extra.txt").write_text("untracked\n")
    snap = assert_round_trip(tmp_path / "side", tmp_path / "rebuilt")
    assert snap.spec.repo.branch == "side" and snap.spec.repo.dirty


def test_a_file_added_then_deleted_leaves_the_tree_clean(repo: Repo, tmp_path: Path) -> None:
    repo.write("new/ü file.txt", "")
    repo.git("add", "--", "new/ü file.txt")
    (repo.path / "new" / "ü file.txt").unlink()  # git status: AD, the working tree is HEAD's
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert not snap.spec.repo.dirty and snap.spec.patch is None


@pytest.mark.parametrize("key", ["../canary", "{canary}", "vendor/lib/../../../canary"])
def test_keys_that_skipped_the_spec_check_still_reach_no_other_repository(
    tmp_path: Path, key: str
) -> None:
    """A snapshot built in Python is not read through TaskSpec.from_dict: the rebuild's own
    checks (a gitlink in the recorded tree, real folders) still refuse such keys."""
    canary = make_canary(tmp_path)
    repo = with_submodule(tmp_path)
    key = key.format(canary=canary.path)
    patch, tree = canary.attack(tmp_path / "scratch")
    before = canary.state()
    with pytest.raises(ReconstructError, match=r"not a submodule|outside the rebuilt tree"):
        reconstruct(aimed_at(_snap(repo), key, patch, tree), tmp_path / "rebuilt")
    assert canary.state() == before and not canary.filter_ran.exists()


def test_a_nested_key_through_a_link_inside_a_submodule_is_refused(tmp_path: Path) -> None:
    canary = make_canary(tmp_path)
    lib = make_repo(tmp_path / "lib-base", name="lib")
    (lib.path / "ln").symlink_to(canary.path)
    lib.commit("a link in the submodule")
    lib.push()
    repo = make_repo(tmp_path / "main-base")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib.origin), "lib")
    repo.commit("add lib")
    repo.push()
    patch, tree = canary.attack(tmp_path / "scratch")
    before = canary.state()
    snap = Snapshot.from_json(aimed_at(_snap(repo), "lib/ln", patch, tree).to_json())
    with pytest.raises(ReconstructError, match="'lib/ln' is a symbolic link in the recorded tree"):
        reconstruct(snap, tmp_path / "rebuilt")
    assert canary.state() == before and not canary.filter_ran.exists()
