from __future__ import annotations

from pathlib import Path

import pytest

from overnight.errors import ReconstructError
from overnight.recorder.bundle import unpushed
from overnight.recorder.checkout import reconstruct
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.gitrepo import Repo, assert_round_trip, make_repo


def test_pushed_history_needs_no_bundle(repo: Repo) -> None:
    assert unpushed(Git(repo.path), "origin") is None


@pytest.mark.slow
def test_unpushed_commits_are_bundled_and_rebuilt(repo: Repo, tmp_path: Path) -> None:
    for i in range(3):
        repo.write(f"step{i}.py", f"print({i})\n")
        repo.commit(f"step {i}")
    bundle = unpushed(Git(repo.path), "origin")
    assert bundle is not None and bundle.commits == 3
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert snap.spec.bundle is not None and not snap.spec.repo.dirty
    rebuilt = Git(tmp_path / "rebuilt")
    assert rebuilt.text("rev-parse", "HEAD") == repo.git("rev-parse", "HEAD").strip()
    assert rebuilt.text("rev-list", "--count", "HEAD") == "4"


@pytest.mark.slow
def test_commits_on_another_remote_only_are_bundled(repo: Repo, tmp_path: Path) -> None:
    fork = make_repo(tmp_path / "fork-base", name="fork").origin
    assert fork is not None
    repo.git("remote", "add", "fork", str(fork))
    repo.write("feature.py", "x = 1\n")
    repo.commit("only on the fork")
    repo.git("push", "-q", "fork", "HEAD:refs/heads/feature")
    snap = take_snapshot(repo.path, ["python", "x.py"], SnapshotOptions())
    assert snap.spec.repo.remote == "origin" and snap.spec.bundle is not None


def test_no_remote_bundles_the_whole_history(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, with_origin=False)
    repo.write("more.py", "y = 2\n")
    repo.commit("second")
    repo.write("dirty.txt", "uncommitted\n")
    snap = assert_round_trip(repo.path, tmp_path / "rebuilt")
    assert snap.spec.repo.url is None and snap.spec.repo.remote is None
    assert unpushed(Git(repo.path), None).commits == 2  # type: ignore[union-attr]


@pytest.mark.slow
def test_missing_prerequisites_are_named(repo: Repo, tmp_path: Path) -> None:
    base = repo.commit("pushed, later removed from origin")
    repo.push()
    repo.write("new.py", "z = 3\n")
    repo.commit("unpushed")
    snap = take_snapshot(repo.path, ["python", "x.py"], SnapshotOptions())
    first = repo.git("rev-list", "--max-parents=0", "HEAD").strip()
    repo.git("push", "-q", "-f", "origin", f"{first}:refs/heads/main")
    dest = tmp_path / "rebuilt"
    # file:// makes git send only reachable objects (a plain path would copy them all).
    with pytest.raises(ReconstructError, match=rf"builds on commit\(s\) {base[:7]} that "):
        reconstruct(snap, dest, source=f"file://{repo.origin}")
    assert not dest.exists()
