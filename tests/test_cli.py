from __future__ import annotations

from overnight.cli import ExitCode, exit_code_for
from overnight.errors import ConnectionFailed, OvernightError, SnapshotError, TaskNotFound
from tests.fixtures.cli import run_cli


def test_help_runs_as_a_subprocess() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "Queue experiments" in proc.stdout


def test_errors_map_to_named_exit_codes() -> None:
    assert exit_code_for(ConnectionFailed("x")) is ExitCode.CONNECTION
    assert exit_code_for(TaskNotFound("x")) is ExitCode.NOT_FOUND
    assert exit_code_for(SnapshotError("x")) is ExitCode.SNAPSHOT
    assert exit_code_for(OvernightError("x")) is ExitCode.FAILURE
