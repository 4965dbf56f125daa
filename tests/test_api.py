from __future__ import annotations

import pytest

import overnight
from overnight.errors import TaskNotFound
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
