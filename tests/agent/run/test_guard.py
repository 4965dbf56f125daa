from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from overnight.agent.run.guard import MARKER, Guard
from overnight.agent.run.process import LocalProcess
from tests.agent.run.test_process import gone
from tests.fixtures.cli import subprocess_env

AGENT = """\
import os, sys, time
from pathlib import Path
from overnight.agent.run.process import LocalProcess
task = LocalProcess(
    [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(300)"],
    cwd=Path(sys.argv[1]),
    env={},
)
Path(sys.argv[1], "task.pid").write_text(str(task.pid))
time.sleep(300)
"""


def test_a_quiet_task_dies_with_its_agent_killed_with_its_group(tmp_path: Path) -> None:
    """SIGKILL of the agent's process group does not reach the task's own session: the
    guard does."""
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path)],
        env=subprocess_env(),
        start_new_session=True,
    )
    pid_file = tmp_path / "task.pid"
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        task = int(pid_file.read_text())
        assert not gone(task, timeout=0.5)
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait(10)
        assert gone(task, timeout=5.0), "the task outlived its agent"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_a_released_guard_leaves_the_group_alone(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        guard = Guard(child.pid)
        guard.release()
        assert gone(guard.pid, timeout=5.0)
        assert child.poll() is None
        Guard(child.pid).fire()
        assert child.wait(5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_task_seen_to_its_end_releases_its_guard(tmp_path: Path) -> None:
    proc = LocalProcess([sys.executable, "-c", "pass"], cwd=tmp_path, env={})
    guards = [
        p
        for p in psutil.Process().children()
        if MARKER in p.cmdline() and str(proc.pid) in p.cmdline()
    ]
    assert len(guards) == 1
    assert b"".join(proc.output()) == b""
    assert proc.wait(10) == 0
    assert gone(guards[0].pid, timeout=5.0)
