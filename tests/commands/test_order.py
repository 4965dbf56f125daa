from __future__ import annotations

import json
import subprocess
import sys

import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer

from overnight.errors import ExitCode
from overnight.queue import keys
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import invoke, make_snapshot


def _submit(store: TaskStore, n: int, *, tag: str = "") -> list[str]:
    tags = (tag,) if tag else ()
    subs = [Submission(make_snapshot(), TaskOptions(queue="q"), tags=tags) for _ in range(n)]
    return [r.id for r in submit_many(store, subs)]


def _order(redis_client: redis.Redis, name: str = "q") -> list[str]:
    return Queue(name, connection=redis_client, serializer=JSONSerializer).job_ids


def test_bump_hold_release_and_move(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis
) -> None:
    a, b, c = _submit(store, 3)
    assert invoke("bump", c[:7]).stdout == f"{c} bumped\n"
    assert _order(redis_client) == [c, a, b]
    assert invoke("hold", a).stdout == f"{a} held\n"
    assert _order(redis_client) == [c, b]
    assert f"{a[:12]}" in invoke("ls", "--status", "held").stdout
    assert invoke("release", a).stdout == f"{a} released\n"
    assert _order(redis_client) == [c, a, b]
    assert invoke("move", b, "-q", "other").stdout == f"{b} moved to other\n"
    assert _order(redis_client, "other") == [b]
    assert store.get(b).options.queue == "other"


def test_by_tag_and_as_json(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    (a,) = _submit(store, 1)
    x, y = _submit(store, 2, tag="half")
    data = json.loads(invoke("hold", "--tag", "half", "--json").stdout)
    assert set(data["changed"]) == {x, y} and data["skipped"] == []
    assert _order(redis_client) == [a]
    invoke("release", "--tag", "half")
    invoke("bump", "--tag", "half")
    assert _order(redis_client) == [x, y, a]


def test_by_sweep(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    (a,) = _submit(store, 1)
    sweep = keys.new_sweep_id()
    subs = [Submission(make_snapshot(), TaskOptions(queue="q"), sweep=sweep) for _ in range(2)]
    x, y = (r.id for r in submit_many(store, subs))
    assert invoke("hold", "--sweep", sweep[:6]).stdout == f"{x} held\n{y} held\n"
    assert _order(redis_client) == [a]
    assert invoke("release", "--sweep", y).stdout == f"{x} released\n{y} released\n"
    invoke("move", "--sweep", sweep, "-q", "other")
    assert _order(redis_client, "other") == [x, y] and _order(redis_client) == [a]
    missing = invoke("bump", "--sweep", "fffffff")
    assert missing.exit_code == ExitCode.NOT_FOUND and "no sweep" in missing.stderr


def test_a_task_that_cannot_change_is_named_with_why(cli_env: Repo, store: TaskStore) -> None:
    a, b = _submit(store, 2)
    store.transition(a, TaskStatus.RUNNING, Change(agent="box"))
    result = invoke("hold", a, b)
    assert result.stdout == f"{b} held\n"
    assert f"overnight: {a} not held: it is running, not queued" in result.stderr
    assert result.exit_code == ExitCode.QUEUE
    assert invoke("hold").exit_code == ExitCode.USAGE


def test_enqueue_front_and_expect(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis
) -> None:
    (a,) = _submit(store, 1)
    out = invoke("enqueue", "--front", "--expect", "3h", "-q", "q", "--", "python", "train.py")
    new = out.stdout.strip()
    assert _order(redis_client) == [new, a]
    assert store.get(new).options.expect == 3 * 3600
    assert "expect=3h" in invoke("show", new).stdout
    bad = invoke("enqueue", "--expect", "soon", "--", "python", "train.py")
    assert bad.exit_code == ExitCode.USAGE and "--expect" in bad.stderr


def test_rq_info_counts_held_tasks_out_of_the_queue(
    cli_env: Repo, store: TaskStore, redis_url: str
) -> None:
    a, b, _ = _submit(store, 3)
    invoke("hold", a, b)
    info = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "--url", redis_url, "-Q", "-r", "q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "queue q 1" in info
