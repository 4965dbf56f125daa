"""compare_runs over tasks enqueued through the Python API, as a script would."""

from __future__ import annotations

import pytest

from overnight.api import Client
from overnight.comparison.report import compare_runs
from overnight.errors import UsageError
from overnight.queue.store import TaskStore
from tests.fixtures.gitrepo import Repo


def test_requirements_from_files_outside_the_diff_get_their_own_diff(
    repo: Repo, redis_url: str, store: TaskStore
) -> None:
    repo.write("reqs/a.txt", "numpy==1.26.4\n")
    repo.write("reqs/b.txt", "numpy==2.0.0\n")
    repo.commit("two sets of requirements")
    repo.push()
    with Client(redis_url) as client:
        [a] = client.enqueue(
            "python train.py", requirements=repo.path / "reqs/a.txt", cwd=repo.path
        )
        [b] = client.enqueue(
            "python train.py", requirements=repo.path / "reqs/b.txt", cwd=repo.path
        )
    found = compare_runs(store, [a.id[:8], b.id], local_repo=repo.path)
    assert found.ids == (a.id, b.id)
    [pair] = found.pairs
    assert not pair.code.changed and not pair.requirements_in_code
    assert pair.requirements == (
        f"--- {a.id}/requirements\n+++ {b.id}/requirements\n@@ -1 +1 @@\n"
        "-numpy==1.26.4\n+numpy==2.0.0\n"
    )
    assert [row.values for row in found.rows if row.field == "requirements"] == [
        ("reqs/a.txt, 1 line", "reqs/b.txt, 1 line")
    ]


def test_one_task_is_not_a_comparison(repo: Repo, redis_url: str, store: TaskStore) -> None:
    with pytest.raises(UsageError, match="at least two tasks"):
        compare_runs(store, ["abc"])
    with Client(redis_url) as client:
        [task] = client.enqueue("python train.py", cwd=repo.path)
    with pytest.raises(UsageError, match=f"task {task.id} is named twice"):
        compare_runs(store, [task.id, task.id[:6]])
