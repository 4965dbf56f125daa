from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from overnight.cli import cli
from overnight.commands.snapshot import options_from_flags, snapshot_options
from overnight.config import ClientConfig
from overnight.errors import ExitCode
from overnight.recorder.snapshot import SnapshotOptions
from overnight.spec import Snapshot
from tests.fixtures.cli import run_cli
from tests.fixtures.gitrepo import Repo, git


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_snapshot_json_is_a_loadable_snapshot(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("train.py", "print('edited')\n")
    monkeypatch.chdir(repo.path)
    monkeypatch.setenv("SEED", "3")
    code, out, _ = _invoke(
        [
            "snapshot",
            "--json",
            "-m",
            "why",
            "--tag",
            "t1",
            "--env",
            "SEED",
            "--",
            "python",
            "train.py",
            "--lr",
            "0.1",
        ]
    )
    assert code == 0
    snap = Snapshot.from_json(out)
    assert snap.spec.argv == ("python", "train.py", "--lr", "0.1")
    assert (snap.spec.note, snap.spec.tags, snap.spec.env) == ("why", ("t1",), {"SEED": "3"})
    assert snap.spec.params == {"lr": "0.1"} and snap.spec.repo.dirty


def test_snapshot_summary_and_help(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo.path)
    code, out, _ = _invoke(["snapshot", "--", "python", "train.py"])
    assert code == 0
    assert "commit:" in out and "on main" in out and "changes:      none (clean)" in out
    code, out, _ = _invoke(["snapshot", "--help"])
    assert code == 0 and "Ignored files" in " ".join(out.split())


def test_output_file_is_written_only_on_success(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path)
    target = tmp_path / "task.json"
    code, _, err = _invoke(["snapshot", "-o", str(target), "--"])
    assert code == ExitCode.SNAPSHOT and "no command to record" in err
    assert not target.exists()
    code, _, _ = _invoke(["snapshot", "-o", str(target), "--", "python", "train.py"])
    assert code == 0 and Snapshot.from_json(target.read_text()).spec.argv == ("python", "train.py")


def test_unknown_options_are_refused_and_the_command_is_untouched(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path)
    code, out, err = _invoke(["snapshot", "--jsn", "--", "python", "train.py"])
    assert code == ExitCode.USAGE and out == ""
    assert "unknown option --jsn (did you mean --json?)" in err and err.count("\n") == 1
    code, out, _ = _invoke(["snapshot", "--json", "python", "train.py", "--jsn", "--", "-x"])
    assert code == 0
    assert Snapshot.from_json(out).spec.argv == ("python", "train.py", "--jsn", "--", "-x")


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        ("plain folder", ["python", "train.py"], "is not inside a git work tree"),
        ("no commit", ["python", "train.py"], "has no commit yet"),
        ("repo", [], "no command to record"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    repo: Repo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    argv: list[str],
    message: str,
) -> None:
    where = {"repo": repo.path, "plain folder": tmp_path / "plain", "no commit": tmp_path / "new"}
    folder = where[setup]
    folder.mkdir(exist_ok=True)
    if setup == "no commit":
        git(folder, "init", "-q")
    monkeypatch.chdir(folder)
    target = tmp_path / "task.json"
    code, out, err = _invoke(["snapshot", "--json", "-o", str(target), "--", *argv])
    assert code == ExitCode.SNAPSHOT and message in err and err.count("\n") == 1
    assert out == "" and not target.exists()
    assert not list(tmp_path.glob(".task.json*"))


def test_size_limit_comes_from_flag_then_environment(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("big.bin", b"\x00" * (2 * 1024 * 1024))
    monkeypatch.chdir(repo.path)
    monkeypatch.setenv("OVERNIGHT_MAX_UNTRACKED_FILE_MB", "1")
    code, _, err = _invoke(["snapshot", "--", "python", "train.py"])
    assert code == ExitCode.SNAPSHOT and "big.bin (2.0 MB)" in err and "over the 1 MB" in err
    code, _, _ = _invoke(["snapshot", "--max-untracked-file-mb", "3", "--", "python", "train.py"])
    assert code == 0


@pytest.mark.slow
def test_errors_reach_the_user_as_one_line_in_a_subprocess(tmp_path: Path, repo: Repo) -> None:
    proc = run_cli("snapshot", "--", "python", "train.py", cwd=tmp_path)
    assert proc.returncode == ExitCode.SNAPSHOT
    assert proc.stderr.startswith("overnight: error: ") and proc.stderr.count("\n") == 1
    assert "not inside a git work tree" in proc.stderr and proc.stdout == ""
    proc = run_cli("snapshot", "--json", "--", "python", "train.py", cwd=repo.path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["repo"]["url"] == str(repo.origin)


def test_snapshot_options_decorator_and_flags_for_enqueue() -> None:
    seen: dict[str, object] = {}

    @click.command()
    @snapshot_options
    def enqueue(**flags: object) -> None:
        seen.update(flags)

    CliRunner().invoke(
        enqueue,
        [
            "--env",
            "A=1",
            "--env",
            "B",
            "-m",
            "n",
            "--tag",
            "x",
            "--name",
            "k",
            "--max-snapshot-mb",
            "5",
            "--allow-secret-env",
            "--allow-secret-files",
            "--requirements",
            "r.txt",
        ],
        catch_exceptions=False,
    )
    options = options_from_flags(seen, ClientConfig(max_untracked_file_mb=9.0))
    assert options == SnapshotOptions(
        requirements_file=Path("r.txt"),
        env=("A=1", "B"),
        allow_secret_env=True,
        allow_secret_files=True,
        note="n",
        tags=("x",),
        name="k",
        max_snapshot_mb=5.0,
        max_untracked_file_mb=9.0,
    )
    assert options_from_flags({}, ClientConfig(max_snapshot_mb=7.0)).max_snapshot_mb == 7.0


def test_snapshot_refuses_a_missing_script_and_warns_as_enqueue_does(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path)
    code, out, err = _invoke(["snapshot", "--json", "--", "python", "trian.py"])
    assert (code, out) == (ExitCode.SNAPSHOT, "")
    assert err == (
        "overnight: error: the command's script trian.py does not exist in the repository root "
        "(where the command runs); did you mean train.py?\n"
    )
    repo.write(".gitignore", "data/\n")
    repo.write("data/train.csv", "a,b\n")
    code, out, err = _invoke(["snapshot", "--json", "--", "python", "train.py", "data/train.csv"])
    assert code == 0 and Snapshot.from_json(out).spec.argv[-1] == "data/train.csv"
    warned = err.splitlines()
    assert warned[0].startswith("overnight: warning: no requirements file from the repository")
    assert any(
        w.startswith("overnight: warning: the command names data/train.csv, which git ignores")
        for w in warned
    ), warned
    assert all(w.startswith("overnight: warning: ") for w in warned)
