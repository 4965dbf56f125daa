"""Claiming a popped job, in-process against a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from overnight.queue.records import TaskStatus
from tests.fixtures.agents import agent_config, enqueue, log_text, make_daemon
from tests.fixtures.gitrepo import Repo

pytestmark = pytest.mark.slow


def test_a_claim_cut_short_before_it_was_stored_is_made_again_with_its_resources(
    redis_url: str, project: Repo, tmp_path: Path, venv_cache: Path
) -> None:
    # Redis goes away as the claim is sent and comes back without it (a failover that lost the
    # write, or an outage before it left): the task is still queued, its slot already held.
    config = agent_config(redis_url, tmp_path / "agent", venv_cache)
    daemon = make_daemon(config)
    record = enqueue(daemon.store, project)
    transition = daemon.store.transition
    failed: list[str] = []

    def cut_short(task_id: str, status: TaskStatus, *args: Any, **kwargs: Any) -> Any:
        if status is TaskStatus.PREPARING and not failed:
            failed.append(task_id)
            raise redis.ConnectionError("Connection closed by server.")
        return transition(task_id, status, *args, **kwargs)

    daemon.store.transition = cut_short  # type: ignore[method-assign]
    daemon.run(burst=True)
    ended = daemon.store.get(record.id)
    assert failed == [record.id]
    assert ended.status is TaskStatus.FINISHED, ended.error
    assert "done" in log_text(daemon.store, record.id)
    daemon.store.redis.close()
