"""`make demo` end to end: a private Redis, a sweep of three runs, one agent in burst mode."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli import REPO_ROOT, subprocess_env
from tests.fixtures.services import missing_service

pytestmark = pytest.mark.slow


def test_demo_runs_a_sweep_through_an_agent(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        missing_service("redis-server is not installed (apt-get install redis-server)")
    demo = tmp_path / "demo"
    env = subprocess_env(OVERNIGHT_DEMO_DIR=str(demo), PYTHON=sys.executable)
    del env["PYTHONPATH"]  # as a user runs it: the demo must pick this checkout by itself
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "examples" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "demo done: 3 tasks finished" in out
    assert f"running overnight from {REPO_ROOT}\n" in out
    for lr in ("0.3", "0.1", "0.03"):
        assert f"python train.py --lr {lr} --epochs 20" in out
    assert out.count("finished") >= 3
    assert "using extra_points.json" in out  # the untracked file reached the agent
    assert '"metric": "loss"' in out
    assert not (demo / "run" / "redis.pid").exists() or not _alive(demo / "run" / "redis.pid")


def _alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()
