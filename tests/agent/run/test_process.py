from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from overnight.agent.run.monitor import ProcessTreeSampler
from overnight.agent.run.process import LocalProcess, kernel_oom_kills
from overnight.errors import TaskRunError

PY = sys.executable


def run_to_end(proc: LocalProcess) -> bytes:
    data = b"".join(proc.output())
    assert proc.wait(30) is not None
    return data


def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_stdout_and_stderr_are_merged_in_order(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(3):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
    )
    proc = LocalProcess([PY, "-c", script], cwd=tmp_path, env=dict(os.environ))
    assert run_to_end(proc).decode().splitlines() == [
        "out 0", "err 0", "out 1", "err 1", "out 2", "err 2"
    ]  # fmt: skip


def test_exit_code_cwd_and_env_are_the_ones_given(tmp_path: Path) -> None:
    script = "import os, sys; print(os.getcwd()); print(os.environ['ONLY_HERE']); sys.exit(7)"
    proc = LocalProcess([PY, "-c", script], cwd=tmp_path, env={"ONLY_HERE": "yes"})
    assert run_to_end(proc).decode().splitlines() == [str(tmp_path), "yes"]
    assert proc.poll() == 7
    assert proc.ident == str(proc.pid)


def test_exit_callback_runs_once_with_the_code(tmp_path: Path) -> None:
    seen: list[int] = []
    proc = LocalProcess(
        [PY, "-c", "raise SystemExit(4)"], cwd=tmp_path, env={}, on_exit=seen.append
    )
    assert proc.wait(30) == 4
    assert proc.poll() == 4
    assert seen == [4]
    proc.close()


def test_command_not_found_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(TaskRunError, match="command not found: no-such-command-xyz"):
        LocalProcess(["no-such-command-xyz", "--flag"], cwd=tmp_path, env={"PATH": "/usr/bin"})


def test_command_is_looked_up_on_the_given_path(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\necho from mytool\n")
    tool.chmod(0o755)
    proc = LocalProcess(["mytool"], cwd=tmp_path, env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert run_to_end(proc) == b"from mytool\n"


def test_a_file_that_is_not_executable_is_explained(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("echo hi\n")
    with pytest.raises(TaskRunError, match=r"not executable: \./train\.sh"):
        LocalProcess(["./train.sh"], cwd=tmp_path, env={})


def test_missing_working_directory_is_explained(tmp_path: Path) -> None:
    with pytest.raises(TaskRunError, match="does not exist"):
        LocalProcess([PY, "-c", "pass"], cwd=tmp_path / "nope", env={})


def test_terminate_and_kill_reach_the_whole_group(tmp_path: Path) -> None:
    # The child starts a grandchild that ignores nothing; both must end on terminate().
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = LocalProcess([PY, "-c", script], cwd=tmp_path, env=dict(os.environ))
    grandchild = int(next(proc.output()).decode().split()[0])
    proc.terminate()
    assert proc.wait(30) == -15
    assert gone(grandchild)
    proc.kill()  # the group is gone; stopping again is harmless
    proc.close()


def test_wait_returns_when_the_process_ends_not_when_the_timeout_does(tmp_path: Path) -> None:
    proc = LocalProcess(
        [PY, "-c", "import time; time.sleep(0.2)"], cwd=tmp_path, env=dict(os.environ)
    )
    proc.close()
    assert proc.wait(timeout=3600) == 0  # a wait that slept out its timeout would hit pytest's


def test_pids_and_samplers_are_the_process_tree(tmp_path: Path) -> None:
    proc = LocalProcess(["sh", "-c", "sleep 30 & exec sleep 31"], cwd=tmp_path, env={})
    try:
        deadline = time.monotonic() + 60
        while len(proc.pids()) < 2:
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.02)
        assert proc.pid in proc.pids()
        (sampler,) = proc.samplers()
        assert isinstance(sampler, ProcessTreeSampler) and sampler.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()
        proc.close()
    assert proc.pids() == set()


SELF_KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"


class OomCounter:
    """The host's OOM kill count as the test sets it (the kernel's cannot be raised safely)."""

    def __init__(self) -> None:
        self.count = 5

    def __call__(self) -> int:
        return self.count


def test_a_sigkill_during_which_the_host_counted_an_oom_kill_is_the_oom_killers(
    tmp_path: Path,
) -> None:
    counter = OomCounter()
    proc = LocalProcess(
        [PY, "-c", SELF_KILL], cwd=tmp_path, env=dict(os.environ), oom_kills=counter
    )
    run_to_end(proc)
    assert not proc.oom_killed()  # killed, but the host counted no OOM kill meanwhile
    counter.count += 1
    assert proc.oom_killed()


def test_an_exit_is_never_an_oom_kill_whatever_the_host_counted(tmp_path: Path) -> None:
    counter = OomCounter()
    proc = LocalProcess(
        [PY, "-c", "raise SystemExit(3)"], cwd=tmp_path, env=dict(os.environ), oom_kills=counter
    )
    run_to_end(proc)
    counter.count += 1
    assert not proc.oom_killed()


def test_the_hosts_oom_kill_count_is_read_from_vmstat() -> None:
    count = kernel_oom_kills()
    assert count is None or count >= 0
    if Path("/proc/vmstat").exists() and "oom_kill " in Path("/proc/vmstat").read_text():
        assert isinstance(count, int)
