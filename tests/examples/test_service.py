"""examples/overnight-agent.service: its command line serves a queue, and it keeps the defaults
its comments rely on."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import LOCAL_REPOS, enqueue
from tests.fixtures.cli import REPO_ROOT, run_cli
from tests.fixtures.gitrepo import Repo

UNIT = REPO_ROOT / "examples" / "overnight-agent.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys keep case
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_relies_on_what_its_comments_say() -> None:
    service = _unit()["Service"]
    assert "KillMode" not in service  # control-group: the tasks get the stop's SIGTERM too
    assert service["Restart"] == "always"
    assert "--name %H" in service["ExecStart"]  # the same name after a restart
    assert service["Environment"].startswith("OVERNIGHT_REDIS_URL=")


@pytest.mark.slow
def test_the_units_command_serves_its_queue(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    record = enqueue(agent_store, project, queue="gpu", gpus=0)
    argv = shlex.split(_unit()["Service"]["ExecStart"].replace("%H", "box-1"))
    assert Path(argv[0]).name == "overnight"
    proc = run_cli(
        *argv[1:],
        "--burst",
        "--gpus",
        "none",
        "--env-mode",
        "venv",
        "--workspace-dir",
        str(tmp_path / "ws"),
        "--cache-dir",
        str(venv_cache),
        OVERNIGHT_REDIS_URL=redis_url,
        env=LOCAL_REPOS,  # the test's origin is a local bare repo
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = agent_store.get(record.id)
    assert (done.status, done.agent) == (TaskStatus.FINISHED, "box-1")
