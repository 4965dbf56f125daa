from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import overnight
from overnight.api import default_gpus
from overnight.config import ClientConfig, load_client_config
from overnight.errors import ConfigError, SnapshotTooLargeError, TaskNotFound
from overnight.queue.records import TaskStatus
from tests.fixtures.gitrepo import Repo


@pytest.mark.slow
def test_enqueue_and_get(repo: Repo, redis_url: str) -> None:
    repo.write("train.py", "print('changed')\n")
    [task] = overnight.enqueue(
        "python train.py --lr 0.1", queue="gpu", timeout="2h", note="api", cwd=repo.path,
        redis_url=redis_url,
    )  # fmt: skip
    assert task.status is TaskStatus.QUEUED and task.options.timeout == 7200
    assert overnight.get(task.id[:6], redis_url=redis_url) == task
    runs = overnight.enqueue(
        ["python", "train.py"], sweep={"lr": [0.1, 0.01]}, cwd=repo.path, redis_url=redis_url
    )
    assert [r.params for r in runs] == [{"lr": "0.1"}, {"lr": "0.01"}]
    with pytest.raises(TaskNotFound):
        overnight.get("ffffffffffff", redis_url=redis_url)


def test_api_is_exported() -> None:
    assert {"enqueue", "get"} <= set(overnight.__all__)


def test_snapshot_records_without_redis(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("train.py", "print('changed')\n")
    snap = overnight.snapshot("python train.py --lr 0.1", note="why", tags=["a"], cwd=repo.path)
    assert snap.spec.argv == ("python", "train.py", "--lr", "0.1")
    assert (snap.spec.params, snap.spec.note, snap.spec.tags) == ({"lr": "0.1"}, "why", ("a",))
    assert snap.spec.repo.dirty and snap.blob(snap.spec.patch)
    assert overnight.Snapshot.from_json(snap.to_json()).spec == snap.spec
    repo.write("big.bin", b"\x00" * (2 * 1024 * 1024))
    monkeypatch.setenv("OVERNIGHT_MAX_UNTRACKED_FILE_MB", "1")  # settings as for the CLI
    with pytest.raises(SnapshotTooLargeError, match=r"big\.bin \(2\.0 MB\)"):
        overnight.snapshot(["python", "train.py"], cwd=repo.path)


@pytest.mark.parametrize(
    ("settings", "queue", "gpus"),
    [
        ({}, "default", 0),
        ({}, "cpu", 0),
        ({}, "CPU-big", 0),
        ({}, "gpu", 1),
        ({}, "a100", 1),
        ({"cpu_queues": ("batch",)}, "batch", 0),
        ({"cpu_queues": ("batch",)}, "default", 1),  # the list replaces the default one
        ({"cpu_queues": ("batch",)}, "cpu-small", 0),  # cpu... is always a CPU queue
        ({"default_gpus": 2}, "cpu", 2),
        ({"default_gpus": 0}, "gpu", 0),
    ],
)
def test_default_gpus_by_queue(settings: dict[str, Any], queue: str, gpus: int) -> None:
    assert default_gpus(ClientConfig(**settings), queue) == gpus


def test_default_gpus_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("cpu_queues: [batch, etl]\n")
    config = load_client_config(environ={}, path=path)
    assert (default_gpus(config, "etl"), default_gpus(config, "default")) == (0, 1)
    with pytest.raises(ConfigError, match="default_gpus must be 0 or more"):
        default_gpus(ClientConfig(default_gpus=-1), "gpu")


def test_enqueue_defaults_gpus_by_queue(repo: Repo, redis_url: str) -> None:
    [cpu] = overnight.enqueue("python train.py", cwd=repo.path, redis_url=redis_url)
    [gpu] = overnight.enqueue("python train.py", queue="gpu", cwd=repo.path, redis_url=redis_url)
    assert (cpu.options.gpus, gpu.options.gpus) == (0, 1)
