"""``overnight agent checkout``: rebuild a tree from a ``snapshot --json`` file or a queued task."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.errors import ExitCode
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.escapes import Canary, aimed_at, make_canary, with_submodule
from tests.fixtures.gitrepo import Repo, worktree_state
from tests.fixtures.tasks import invoke

pytestmark = pytest.mark.slow


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


@pytest.fixture
def target(tmp_path: Path) -> tuple[Repo, Canary]:
    """A project with a submodule ``vendor/lib``, a folder ``data`` and symbolic links ``link``
    (committed) and ``new-link`` (not) to a canary repository outside every tree rebuilt."""
    canary = make_canary(tmp_path)
    repo = with_submodule(tmp_path, **{"data/table.csv": "a,b\n"})
    (repo.path / "link").symlink_to(canary.path)
    repo.commit("a link")
    repo.push()
    (repo.path / "new-link").symlink_to(canary.path)  # uncommitted: the patch makes it
    return repo, canary


@pytest.mark.parametrize(
    ("key", "code", "cause"),
    [
        ("{canary}", ExitCode.SPEC, "which is absolute"),
        ("../canary", ExitCode.SPEC, "which climbs out through '..'"),
        ("vendor/../../canary", ExitCode.SPEC, "which climbs out through '..'"),
        (".git/x", ExitCode.SPEC, "which reaches into a .git folder"),
        (".git/modules/vendor/lib", ExitCode.SPEC, "which reaches into a .git folder"),
        ("data", ExitCode.RECONSTRUCT, "'data' is a folder in the recorded tree, not a submodule"),
        ("link", ExitCode.RECONSTRUCT, "'link' is a symbolic link in the recorded tree"),
        ("link/x", ExitCode.RECONSTRUCT, "'link' is a symbolic link in the recorded tree"),
        ("new-link", ExitCode.RECONSTRUCT, "'new-link' is a symbolic link in the recorded"),
        ("vendor/lib/x", ExitCode.RECONSTRUCT, "'vendor/lib/x' is not there in the recorded"),
    ],
)
def test_a_submodule_key_aimed_outside_its_submodules_writes_nothing_there(
    target: tuple[Repo, Canary], tmp_path: Path, key: str, code: ExitCode, cause: str
) -> None:
    repo, canary = target
    key = key.format(canary=canary.path)
    snap = take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions())
    patch, tree = canary.attack(tmp_path / "scratch")
    spec = tmp_path / "task.json"
    spec.write_text(aimed_at(snap, key, patch, tree).to_json())
    before = canary.state()
    exit_code, _, err = _invoke(["agent", "checkout", str(spec), str(tmp_path / "rebuilt")])
    assert (exit_code, err.count("\n")) == (code, 1) and cause in err, err
    assert canary.state() == before
    assert not canary.filter_ran.exists()
    assert not (tmp_path / "rebuilt").exists()


def test_a_submodule_url_that_is_a_command_never_runs(
    tmp_path: Path, _isolated_git_config: Path
) -> None:
    with _isolated_git_config.open("a") as config:  # an agent whose git allows every protocol
        config.write("[protocol]\n\tallow = always\n")
    repo = with_submodule(tmp_path, "lib")
    ran = tmp_path / "ext-ran"
    repo.git("config", "-f", ".gitmodules", "submodule.lib.url", f"ext::sh -c touch% {ran}")
    spec = tmp_path / "task.json"
    spec.write_text(take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions()).to_json())
    exit_code, _, err = _invoke(["agent", "checkout", str(spec), str(tmp_path / "rebuilt")])
    assert exit_code != 0 and err.count("\n") == 1, err
    assert not ran.exists()
