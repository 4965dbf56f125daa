"""``overnight agent daemon`` as a user starts it: flags, config and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.cli import ExitCode
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import enqueue
from tests.fixtures.cli import run_cli
from tests.fixtures.gitrepo import Repo
from tests.fixtures.services import free_port


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    return {
        "OVERNIGHT_WORKSPACE_DIR": str(tmp_path / "ws"),
        "OVERNIGHT_CACHE_DIR": str(tmp_path / "envs"),
        "OVERNIGHT_SPILL_DIR": str(tmp_path / "spill"),
    }


def test_burst_on_empty_queues_exits_cleanly(redis_url: str, dirs: dict[str, str]) -> None:
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none",
        OVERNIGHT_REDIS_URL=redis_url, **dirs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "serving q" in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        (["--redis-url", "redis://127.0.0.1:{port}/0"], {}, ExitCode.CONNECTION, "cannot reach"),
        (["--gpus", "7"], {}, ExitCode.USAGE, "GPU 7 is not present"),
        (["--env-mode", "docker"], {"DOCKER_HOST": "unix:///nonexistent.sock"}, ExitCode.CONFIG,
         "no Docker engine answers"),
        ([], {"OVERNIGHT_LOST_TTL": "1", "OVERNIGHT_HEARTBEAT_INTERVAL": "5"}, ExitCode.CONFIG,
         "lost_ttl"),
        (["--gpu-foreign-mb", "-1"], {}, ExitCode.CONFIG, "--gpu-foreign-mb 1024"),
        (["--monitor-interval", "0"], {}, ExitCode.CONFIG, "monitor_interval"),
        (["--uptime", "fri 25:00-mon 07:00"], {}, ExitCode.USAGE, "not a time of day"),
    ],
)  # fmt: skip
def test_bad_setup_is_one_line_naming_the_fix(
    redis_url: str,
    dirs: dict[str, str],
    args: list[str],
    env: dict[str, str],
    code: ExitCode,
    words: str,
) -> None:
    args = [a.format(port=free_port()) for a in args]
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", *args,
        OVERNIGHT_REDIS_URL=redis_url, **dirs, **env,
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("overnight: error: ") and proc.stderr.count("\n") == 1
    assert words in proc.stderr


def test_a_closed_window_takes_no_task(
    redis_url: str, dirs: dict[str, str], agent_store: TaskStore, project: Repo
) -> None:
    record = enqueue(agent_store, project)
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none",
        "--downtime", "mon-sun", OVERNIGHT_REDIS_URL=redis_url, **dirs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert agent_store.get(record.id).status is TaskStatus.QUEUED
