"""``overnight agent checkout``: rebuild a tree from a ``snapshot --json`` file or a queued task."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.cli import ExitCode
from tests.fixtures.gitrepo import Repo, worktree_state
from tests.fixtures.tasks import invoke


@pytest.fixture(autouse=True)
def _local_repos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repos here have a local bare origin, which checkout fetches only when allowed."""
    monkeypatch.setenv("OVERNIGHT_ALLOW_LOCAL_REPOS", "1")


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = invoke(*args)
    return result.exit_code, result.stdout, result.stderr


def test_checkout_rebuilds_from_a_spec_file(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("new dir/data.bin", b"\x00\xff\x00")
    repo.write("train.py", "print('edited')\n")
    monkeypatch.chdir(repo.path)
    spec = tmp_path / "task.json"
    assert _invoke(["snapshot", "-o", str(spec), "--", "python", "train.py"])[0] == 0
    code, out, _ = _invoke(["agent", "checkout", str(spec), str(tmp_path / "rebuilt")])
    assert code == 0 and "+ patch" in out
    assert worktree_state(tmp_path / "rebuilt") == worktree_state(repo.path)


def test_checkout_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = _invoke(["agent", "checkout", str(tmp_path / "none.json"), str(tmp_path / "d")])
    assert code == ExitCode.USAGE and "no such file" in err and err.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _invoke(["agent", "checkout", str(bad), str(tmp_path / "d")])
    assert code == ExitCode.SPEC and "not valid JSON" in err


def test_checkout_rebuilds_a_queued_task_by_id(
    repo: Repo, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("train.py", "print('edited for the task')\n")
    repo.write("untracked.txt", "along for the ride")
    monkeypatch.chdir(repo.path)
    monkeypatch.setenv("OVERNIGHT_REDIS_URL", redis_url)
    code, out, _ = _invoke(["enqueue", "-q", "q", "--", "python", "train.py"])
    assert code == 0
    task_id = out.split()[0]
    code, out, _ = _invoke(["agent", "checkout", task_id[:6], str(tmp_path / "rebuilt")])
    assert code == 0 and "+ patch" in out
    assert worktree_state(tmp_path / "rebuilt") == worktree_state(repo.path)


def test_checkout_fetches_a_local_origin_only_with_allow_local_repos(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path)
    spec = tmp_path / "task.json"
    assert _invoke(["snapshot", "-o", str(spec), "--", "python", "train.py"])[0] == 0
    monkeypatch.setenv("OVERNIGHT_ALLOW_LOCAL_REPOS", "0")
    code, _, err = _invoke(["agent", "checkout", str(spec), str(tmp_path / "rebuilt")])
    assert code == ExitCode.RECONSTRUCT and err.count("\n") == 1
    assert f"repo.url '{repo.origin}' is a local path" in err and "allow_local_repos" in err
    assert not (tmp_path / "rebuilt").exists()
    # Named on the command line by the user, a local --source is theirs to choose.
    code, _, err = _invoke(
        ["agent", "checkout", "--source", str(repo.origin), str(spec), str(tmp_path / "rebuilt")]
    )
    assert code == 0, err
