"""A full disk is the host's fault: the task goes back to the front and the agent pauses."""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path
from typing import Any

import pytest

from overnight.agent.config import AgentConfig
from overnight.agent.run.pipeline import MAX_HOST_FAULTS
from overnight.agent.service.hostfaults import FaultHold, host_fault
from overnight.errors import EnvironmentBuildError, ReconstructError, TaskRunError
from overnight.queue.records import Phase, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import Background, agent_config, enqueue, make_daemon, wait_status
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import wait_output

pytestmark = pytest.mark.slow


def _write_to_full_disk() -> OSError:
    """The kernel's own ENOSPC: /dev/full refuses every write."""
    try:
        with open("/dev/full", "wb", buffering=0) as full:
            full.write(b"x")
    except OSError as exc:
        return exc
    raise AssertionError("/dev/full took a write")


def test_a_full_disk_is_recognised_through_wrapping_and_in_tools_output() -> None:
    enospc = _write_to_full_disk()
    assert enospc.errno == errno.ENOSPC
    assert host_fault(enospc) == "no space left on device"
    try:
        try:
            raise enospc
        except OSError as exc:
            raise ReconstructError(f"cannot copy the task's tree: {exc.strerror}") from exc
    except ReconstructError as wrapped:
        assert host_fault(wrapped) == "no space left on device"
    uv = EnvironmentBuildError(
        "uv pip install failed: error: No space left on device (os error 28)"
    )
    assert host_fault(uv) == "no space left on device"
    quota = TaskRunError("cannot start python: [Errno 122] Disk quota exceeded")
    assert host_fault(quota) == "disk quota exceeded"
    assert host_fault(ReconstructError("commit abc is not in the remote")) is None
    assert host_fault(OSError(errno.EACCES, "Permission denied")) is None


def test_a_hold_lasts_its_pause() -> None:
    now = [100.0]
    hold = FaultHold(60.0, clock=lambda: now[0])
    assert hold.current() is None
    hold.hold("no space left on device during workspace")
    now[0] += 45
    assert hold.current() == ("no space left on device during workspace", 15.0)
    now[0] += 15
    assert hold.current() is None


@pytest.fixture
def config(redis_url: str, tmp_path: Path, venv_cache: Path) -> AgentConfig:
    return agent_config(redis_url, tmp_path / "agent", venv_cache, fault_pause=2.0)


@pytest.fixture
def full_disk(config: AgentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """While the returned file exists, copying a task's tree meets a full disk (a real ENOSPC)."""
    full = tmp_path / "disk-is-full"
    full.touch()
    tasks_dir = config.workspace_path / "tasks"
    copyfile = shutil.copyfile

    def copy_to_a_full_disk(src: Any, dst: Any, **kwargs: Any) -> Any:
        if full.exists() and tasks_dir in Path(dst).parents:
            raise _write_to_full_disk()
        return copyfile(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_to_a_full_disk)
    return full


def test_a_full_disk_pauses_the_agent_and_costs_no_task(
    agent_store: TaskStore, project: Repo, config: AgentConfig, redis_url: str, full_disk: Path
) -> None:
    first, second = (enqueue(agent_store, project) for _ in range(2))
    agent = Background(make_daemon(config))
    try:
        wait_output(
            redis_url,
            ("paused", "paused after a host fault: no space left on device during workspace"),
            "workers",
        )
        assert agent_store.get(first.id).status is TaskStatus.QUEUED
        assert agent_store.get(second.id).status is TaskStatus.QUEUED  # not tried meanwhile
        full_disk.unlink()  # space freed: after its pause the agent goes on
        done = [wait_status(agent_store, t.id, TaskStatus.FINISHED) for t in (first, second)]
    finally:
        agent.stop(force=True)
    notes = [h.note for h in done[0].history]
    assert (
        "agent agent-a: no space left on device during workspace; requeued at the front, "
        "the agent pauses 2s"
    ) in notes
    assert done[0].started is not None and done[1].started is not None
    assert done[0].started <= done[1].started  # it kept its place at the front


def test_a_task_that_meets_a_full_disk_again_and_again_fails(
    agent_store: TaskStore, project: Repo, config: AgentConfig, full_disk: Path
) -> None:
    """It may never fit: it must not hold the queue's front for good."""
    record = enqueue(agent_store, project)
    agent = Background(make_daemon(dataclasses.replace(config, fault_pause=0.3)))
    try:
        failed = wait_status(agent_store, record.id, TaskStatus.FAILED)
    finally:
        agent.stop(force=True)
    assert failed.phase is Phase.WORKSPACE
    assert failed.error is not None
    assert "No space left on device" in failed.error, failed.error
    assert failed.error.endswith(f"({MAX_HOST_FAULTS} times, each on a full disk)")
    requeued = [h for h in failed.history if "requeued at the front" in h.note]
    assert len(requeued) == MAX_HOST_FAULTS - 1
