from __future__ import annotations

import pytest

import overnight
from overnight.errors import SnapshotTooLargeError, TaskNotFound
from overnight.queue.records import TaskStatus
from tests.fixtures.gitrepo import Repo


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
