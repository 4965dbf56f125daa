from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import pytest
import redis

from overnight.commands.views import LS_HEADERS, when
from overnight.errors import ExitCode
from overnight.metrics.summary import MetricSummary
from overnight.optimize import settings as stored
from overnight.optimize.storage import StudyStorage
from overnight.queue import keys
from overnight.queue.index import Query
from overnight.queue.records import Change, Phase, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit, submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.units import format_bytes
from tests.fixtures.gitrepo import Repo
from tests.fixtures.services import RedisServer, free_port
from tests.fixtures.studies import settings_for
from tests.fixtures.tasks import finish, invoke, make_snapshot


def _task(store: TaskStore, **options: object) -> str:
    argv = ("python", "train.py", "--lr", "0.1", "--epochs=3")
    return submit(store, make_snapshot(argv, name=None), TaskOptions(**options)).id  # type: ignore[arg-type]


def _run(store: TaskStore, task_id: str, status: TaskStatus = TaskStatus.FINISHED) -> None:
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1", gpu_ids=("0",)))
    store.transition(task_id, status, Change(exit_code=0 if status is TaskStatus.FINISHED else 2))


def test_ls_shows_tasks_and_filters(cli_env: Repo, store: TaskStore) -> None:
    queued = _task(store, queue="gpu")
    done = _task(store, queue="cpu")
    _run(store, done)
    out = invoke("ls").stdout
    assert queued in out and done in out and "finished" in out and "lr=0.1 epochs=3" in out
    assert "box1" in out
    only = invoke("ls", "-q", "gpu").stdout
    assert queued in only and done not in only
    rows = json.loads(invoke("ls", "--status", "finished", "--json").stdout)
    assert [r["id"] for r in rows] == [done] and rows[0]["exit_code"] == 0
    assert invoke("ls", "--tag", "nope").stdout.strip() == "no tasks match"
    assert invoke("ls", "--since", "yesterday").exit_code == ExitCode.USAGE
    assert [r["id"] for r in json.loads(invoke("ls", "--limit", "1", "--json").stdout)] == [done]
    assert len(json.loads(invoke("ls", "--since", "1h", "--json").stdout)) == 2
    assert invoke("ls", "--since", "2999-01-01").stdout.strip() == "no tasks match"


def test_ls_columns(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    """id, name or command, params, status, queue, agent, GPUs, started, duration, exit."""
    task_id = submit(
        store,
        make_snapshot(("python", "train.py", "--lr", "0.1"), tags=("abl",)),
        TaskOptions(queue="gpu", gpus=2),
    ).id
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1", gpu_ids=("2", "3")))
    store.transition(task_id, TaskStatus.FAILED, Change(exit_code=3))
    record = json.loads(redis_client.get(keys.task(task_id)) or b"")
    record["ended"] = record["started"] + 3725  # ran 1h02m05s
    redis_client.set(keys.task(task_id), json.dumps(record))
    header, _, row = invoke("ls", "--tag", "abl").stdout.splitlines()[:3]
    assert header.split() == list(LS_HEADERS)
    cells = row.split()
    assert cells[0] == task_id and cells[1:4] == ["python", "train.py", "--lr"]
    assert cells[5:] == ["lr=0.1", "failed", "gpu", "box1", "2,3", when(record["started"]),
                         "1h02m", "3"]  # fmt: skip


def test_a_corrupt_record_never_crashes_ls(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis
) -> None:
    good, bad = _task(store), _task(store)
    redis_client.set(keys.task(bad), b'{"id": "' + bad.encode())
    result = invoke("ls")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if bad in line)
    assert "corrupt" in line and good in result.stdout
    shown = invoke("show", bad)
    assert shown.exit_code == ExitCode.QUEUE and "cannot be decoded" in shown.stderr


_GOOD = {"id": "", "spec_id": "s", "options": {"queue": "gpu"}, "status": "running", "at": 0}
_CORRUPTIONS: dict[str, bytes | dict[str, object] | None] = {
    "truncated": b'{"id": "',
    "not an object": b"[1, 2]",
    "wrong type": {"argv": "python train.py"},
    "NaN time": {"started": float("nan")},
    "another id": {"id": "0123456789ab"},
    "bad resources": {"extra": {"resources": {"summary": {"cpu_pct": {"peak": "high"}}}}},
    "a hash key": None,
}
_COMMANDS = [
    ["ls"], ["ls", "--json"], ["show"], ["show", "--json"], ["logs"], ["logs", "-f"],
    ["cancel"], ["retry"], ["clone", "--set", "lr=1"], ["wait"], ["queues"], ["workers"],
    ["summary"], ["top", "--once"], ["top", "--json"], ["cancel", "-q", "gpu"],
    ["ls", "--sort", "-duration", "--metric", "loss"], ["summary", "--sort", "duration", "--csv"],
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(_CORRUPTIONS))
def test_a_corrupt_record_never_crashes_a_command(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis, kind: str
) -> None:
    bad = _task(store, queue="gpu")
    store.transition(bad, TaskStatus.RUNNING, Change(agent="box1"), heartbeat_ttl=600)
    corruption = _CORRUPTIONS[kind]
    redis_client.delete(keys.task(bad))
    if corruption is None:
        redis_client.hset(keys.task(bad), "status", "running")
    elif isinstance(corruption, bytes):
        redis_client.set(keys.task(bad), corruption)
    else:
        redis_client.set(keys.task(bad), json.dumps({**_GOOD, "id": bad, **corruption}))
    for command in _COMMANDS:
        args = [*command[:1], bad, *command[1:]] if command[0] in _BY_ID else command
        result = invoke(*args)
        assert result.exit_code in (0, ExitCode.FAILURE, ExitCode.QUEUE), (args, result.output)
        assert len(result.stderr.strip().splitlines()) <= 1, (args, result.stderr)
        if result.exit_code == ExitCode.QUEUE:
            assert "remove it with `overnight gc --corrupt`" in result.stderr, args
    assert f"{bad} corrupt" in invoke("wait", bad).stdout
    line = next(ln for ln in invoke("ls").stdout.splitlines() if bad in ln)
    assert "corrupt" in line
    assert "1 corrupt record(s)" in invoke("gc", "--corrupt").stdout
    assert not redis_client.exists(keys.task(bad))


_BY_ID = {"show", "logs", "cancel", "retry", "clone", "wait"}


def test_show_by_prefix(cli_env: Repo, store: TaskStore) -> None:
    task_id = _task(store, queue="gpu", gpus=1)
    _run(store, task_id, TaskStatus.FAILED)
    out = invoke("show", task_id[:5]).stdout
    assert "id:" in out and task_id in out and "status:" in out and "failed" in out
    assert "python train.py --lr 0.1 --epochs=3" in out and "exit code:    2" in out
    data = json.loads(invoke("show", task_id, "--json").stdout)
    assert data["spec"]["requirements"]["text"].startswith("numpy")
    assert [h["status"] for h in data["history"]] == ["queued", "running", "failed"]
    missing = invoke("show", "0000000")
    assert missing.exit_code == ExitCode.NOT_FOUND and "no task" in missing.stderr


def test_ambiguous_prefix(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.BY_ID, {"abc111111111": 0, "abc222222222": 0})
    result = invoke("show", "abc")
    assert result.exit_code == ExitCode.QUEUE
    assert "matches several tasks" in result.stderr and "type more characters" in result.stderr


@pytest.mark.slow
def test_logs_tail_and_follow(cli_env: Repo, store: TaskStore) -> None:
    task_id = _task(store)
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1"))
    store.logs.append(task_id, [(1.0, f"line {i}") for i in range(5)])
    assert invoke("logs", task_id).stdout.splitlines() == [f"line {i}" for i in range(5)]
    assert invoke("logs", task_id, "--tail", "2").stdout.splitlines() == ["line 3", "line 4"]

    def agent() -> None:
        time.sleep(0.3)
        store.logs.append(task_id, [(2.0, "late line")])
        time.sleep(0.3)
        store.transition(task_id, TaskStatus.FINISHED, Change(exit_code=0))

    thread = threading.Thread(target=agent)
    thread.start()
    followed = invoke("logs", task_id, "-f", "--tail", "1")
    thread.join()
    assert followed.stdout.splitlines() == ["line 4", "late line"]


@pytest.mark.slow
def test_wait_exit_code_says_whether_all_finished(cli_env: Repo, store: TaskStore) -> None:
    ok, bad = _task(store), _task(store)
    _run(store, ok)
    assert invoke("wait", ok).exit_code == 0

    def finish_later() -> None:
        time.sleep(0.3)
        _run(store, bad, TaskStatus.FAILED)

    thread = threading.Thread(target=finish_later)
    thread.start()
    result = invoke("wait", ok, bad)
    thread.join()
    assert result.exit_code == ExitCode.FAILURE
    assert f"{bad} failed" in result.stdout
    pending = _task(store)
    assert invoke("wait", pending, "--timeout", "1s").exit_code == ExitCode.FAILURE
    threading.Timer(0.3, store.redis.delete, args=(keys.task(pending),)).start()
    gone = invoke("wait", pending)  # removed while waited for (gc, by hand): no endless wait
    assert gone.exit_code == ExitCode.FAILURE and f"{pending} gone" in gone.stdout


def test_cancel(cli_env: Repo, store: TaskStore) -> None:
    queued, running, done = _task(store), _task(store), _task(store)
    store.transition(running, TaskStatus.RUNNING, Change(agent="box1"))
    _run(store, done)
    result = invoke("cancel", queued, running)
    assert result.exit_code == 0
    assert f"{queued} canceled" in result.stdout
    assert f"{running} running on box1: asked its agent to stop it" in result.stdout
    assert store.get(queued).status is TaskStatus.CANCELED
    assert store.cancel_requested(running)
    again = invoke("cancel", done)
    assert again.exit_code == ExitCode.QUEUE and "already finished" in again.stderr
    unknown = invoke("cancel", "0123abcd")
    assert unknown.exit_code == ExitCode.NOT_FOUND and "no task" in unknown.stderr
    assert invoke("cancel").exit_code == ExitCode.USAGE


def test_cancel_a_queue(cli_env: Repo, store: TaskStore) -> None:
    tasks = [_task(store, queue="gpu") for _ in range(2)]
    assert "canceled 2 queued task(s) of queue gpu" in invoke("cancel", "--queue", "gpu").stdout
    assert all(store.get(t).status is TaskStatus.CANCELED for t in tasks)
    unknown = invoke("cancel", "--queue", "gpus")
    assert unknown.exit_code == ExitCode.QUEUE and "no queue named 'gpus'" in unknown.stderr


def test_retry_links_a_new_task_to_the_first(cli_env: Repo, store: TaskStore) -> None:
    first = _task(store, queue="gpu", gpus=1)
    assert invoke("retry", first).exit_code == ExitCode.QUEUE  # still queued
    _run(store, first, TaskStatus.FAILED)
    result = invoke("retry", first[:6])
    assert result.exit_code == 0, result.output
    retry = store.get(result.stdout.strip())
    original = store.get(first)
    assert retry.retry_of == first and retry.spec_id == original.spec_id
    assert (retry.argv, retry.options) == (original.argv, original.options)
    assert retry.history[0].note == f"retry of {first}"
    assert store.get(first).notes == [f"retried as {retry.id}"]
    shown = invoke("show", retry.id).stdout
    assert f"retry of:     {first}" in shown
    assert f"retried as {retry.id}" in invoke("show", first).stdout
    elsewhere = store.get(invoke("retry", first, "-q", "cpu", "--gpus", "0").stdout.strip())
    assert (elsewhere.options.queue, elsewhere.options.gpus) == ("cpu", 0)


def test_retry_of_a_requirements_failure_says_how_to_enqueue_fixed_ones(
    cli_env: Repo, store: TaskStore
) -> None:
    failed, other = _task(store, queue="gpu", gpus=1), _task(store)
    store.transition(failed, TaskStatus.PREPARING, Change(agent="box1", gpu_ids=("0",)))
    store.transition(
        failed,
        TaskStatus.FAILED,
        Change(
            phase=Phase.ENVIRONMENT,
            error="installing the requirements failed (uv exited with 1): No solution found",
            extra={"failed_on": "requirements"},
        ),
    )
    _run(store, other, TaskStatus.FAILED)
    result = invoke("retry", failed)
    assert result.exit_code == 0, result.output
    new = result.stdout.strip()  # the new id alone on stdout
    assert store.get(new).retry_of == failed
    assert result.stderr.strip() == (
        f"overnight: note: {failed} failed installing its requirements, and a retry reuses its "
        f"recorded spec, requirements included: unless the package index was at fault, {new} "
        "fails the same way. To run with fixed ones, fix the requirements and enqueue again "
        "from the repository: overnight enqueue -q gpu --gpus 1 -- python train.py --lr 0.1 "
        "--epochs=3"
    )
    assert invoke("retry", other).stderr == ""  # a failed run: nothing to say


def test_show_says_what_retries_do(cli_env: Repo, store: TaskStore) -> None:
    task_id = _task(store, queue="gpu", gpus=1, retries=2)
    out = invoke("show", task_id).stdout
    assert "retries=2 (run again after infra failures)" in out
    assert "attempt:      1 of 3" in out


def test_show_says_what_a_task_ran_on_and_in(cli_env: Repo, store: TaskStore) -> None:
    from overnight.agent.gpus.hardware import hardware_info
    from overnight.agent.gpus.inventory import FakeInventory

    task_id = _task(store, queue="gpu", gpus=2)
    hardware = hardware_info(FakeInventory.with_gpus(4, name="NVIDIA H200"), gpu_ids=("2", "3"))
    environment = {"mode": "venv", "key": "3f2a9c0d1e2b4a5f", "built": False, "python": "3.11.9"}
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1", gpu_ids=("2", "3")))
    store.transition(
        task_id,
        TaskStatus.RUNNING,
        Change(extra={"hardware": hardware, "environment": environment}),
    )
    out = invoke("show", task_id).stdout
    assert "ran on:       " in out and "2x NVIDIA H200 (GPU 2,3), driver fake-1.0, CUDA 12.4" in out
    assert "environment:  venv, python 3.11.9, key 3f2a9c0d1e2b, from the cache" in out


def test_show_says_how_many_log_lines_were_trimmed_or_lost(cli_env: Repo, store: TaskStore) -> None:
    task_id = _task(store)
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1"))
    agents = TaskStore(store.redis, log_cap_mb=0.001)  # an agent's 1 KB cap, not the CLI's
    agents.logs.append(task_id, [(1.0, f"{i:09d}") for i in range(300)])  # 3 KB
    store.transition(
        task_id, TaskStatus.FINISHED, Change(exit_code=0, extra={"run": {"dropped_log_lines": 7}})
    )
    trimmed, _, _ = store.logs.trimmed(task_id)
    assert trimmed > 0
    out = invoke("show", task_id).stdout.splitlines()
    logs = [line for line in out if line.startswith("log:")]
    assert logs == [
        f"log:          {trimmed} earlier lines ({format_bytes(trimmed * 9)}) were trimmed to keep "
        "this log under 1.0 KB",
        "log:          7 lines of output were lost: the agent could not store them",
    ]
    assert json.loads(invoke("show", task_id, "--json").stdout)["log_trimmed_lines"] == trimmed


def test_show_lists_the_metrics_and_json_has_their_series(cli_env: Repo, store: TaskStore) -> None:
    task_id = _task(store)
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1"))
    metrics = {
        "val/loss": MetricSummary(0.25, 0.2, 2.5, 900, 900.0, 850.0, 0.0),
        "acc": MetricSummary.first(0.5),
    }
    series = {"val/loss": [[0.0, 0.0, 2.5], [60.0, 900.0, 0.25]], "acc": [[1.0, None, 0.5]]}
    assert store.update_metrics(task_id, metrics, series, expect={TaskStatus.RUNNING}, agent="box1")
    out = invoke("show", task_id).stdout.splitlines()
    at = out.index("metrics:")
    assert out[at + 1 : at + 3] == [
        "  acc       last 0.5, min 0.5, max 0.5, 1 value",
        "  val/loss  last 0.25 @ 900, min 0.2 @ 850, max 2.5 @ 0, 900 values",
    ]
    data = json.loads(invoke("show", task_id, "--json").stdout)
    assert data["metrics"]["val/loss"]["min_step"] == 850.0
    assert data["metric_series"] == series
    plain = _task(store)
    assert "metrics:" not in invoke("show", plain).stdout
    assert json.loads(invoke("show", plain, "--json").stdout)["metric_series"] == {}


def test_clone_sets_params_in_argv(cli_env: Repo, store: TaskStore) -> None:
    first = _task(store)
    result = invoke(
        "clone", first, "--set", "lr=0.003", "--set", "epochs=20", "--set", "amp=1",
        "--add-param", "-q", "gpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    clone = store.get(result.stdout.strip())
    assert clone.argv == ("python", "train.py", "--lr", "0.003", "--epochs=20", "--amp", "1")
    assert clone.params == {"lr": "0.003", "epochs": "20", "amp": "1"}
    assert clone.options.queue == "gpu" and clone.spec_id == store.get(first).spec_id
    assert store.load_snapshot(clone.id).spec.argv == clone.argv
    on_cpu = store.get(invoke("clone", first, "--gpus", "0", "-q", "cpu").stdout.strip())
    assert (on_cpu.options.queue, on_cpu.options.gpus, on_cpu.argv) == (
        "cpu",
        0,
        store.get(first).argv,
    )
    bad = invoke("clone", first, "--set", "lr")
    assert bad.exit_code == ExitCode.USAGE and "NAME=VALUE" in bad.stderr


def test_clone_refuses_names_the_command_lacks(cli_env: Repo, store: TaskStore) -> None:
    first = _task(store)
    bad = invoke("clone", first, "--set", "epoch=20")
    assert bad.exit_code == ExitCode.USAGE and store.index.count() == 1
    [line] = bad.stderr.strip().splitlines()
    assert "--set epoch: the command has no option epoch (closest: --epochs)" in line


def test_clone_sets_bare_flags_and_hydra_words(cli_env: Repo, store: TaskStore) -> None:
    argv = ("python", "train.py", "--amp", "model.depth=3")
    first = submit(store, make_snapshot(argv), TaskOptions()).id
    result = invoke("clone", first, "--set", "amp=false", "--set", "model.depth=4")
    assert result.exit_code == 0, result.output
    assert store.get(result.stdout.strip()).argv == ("python", "train.py", "model.depth=4")
    refused = invoke("clone", first, "--set", "amp=0")
    assert refused.exit_code == ExitCode.USAGE
    assert "--amp is a bare flag" in refused.stderr and "amp=false" in refused.stderr


def test_clone_records_its_origin_note_and_tags(cli_env: Repo, store: TaskStore) -> None:
    first = submit(store, make_snapshot(note="baseline", tags=("abl",)), TaskOptions()).id
    result = invoke("clone", first, "-m", "longer warmup", "--tag", "warm", "--tag", "abl")
    assert result.exit_code == 0, result.output
    clone = store.get(result.stdout.strip())
    assert (clone.clone_of, clone.note, clone.tags) == (first, "longer warmup", ("abl", "warm"))
    assert clone.history[0].note == f"clone of {first}"
    shown = invoke("show", clone.id).stdout
    assert f"clone of:     {first}" in shown and "note:         longer warmup" in shown
    assert "tags:         abl warm" in shown
    assert [r.id for r in store.find(Query(tag="warm"))] == [clone.id]
    again = store.get(invoke("clone", clone.id).stdout.strip())
    assert (again.clone_of, again.note, again.tags) == (clone.id, "longer warmup", clone.tags)
    assert "note:         baseline" in invoke("show", first).stdout
    store.transition(clone.id, TaskStatus.CANCELED)
    retry = store.get(invoke("retry", clone.id).stdout.strip())
    assert (retry.retry_of, retry.note, retry.tags) == (clone.id, "longer warmup", clone.tags)


def test_gc(cli_env: Repo, store: TaskStore, redis_client: redis.Redis) -> None:
    old, live = _task(store), _task(store)
    _run(store, old)
    time.sleep(0.05)
    assert "would remove 1 task(s)" in invoke("gc", "--older-than", "0s", "--dry-run").stdout
    assert invoke("gc").stdout.startswith("removed 0 task(s)")  # default: 30 days
    assert invoke("gc", "--older-than", "0s").stdout.startswith("removed 1 task(s)")
    assert not redis_client.exists(keys.task(old)) and store.get(live)
    assert invoke("gc", "--older-than", "a month").exit_code == ExitCode.USAGE


def test_gc_removes_a_study_with_no_task_left(
    cli_env: Repo, store: TaskStore, redis_url: str
) -> None:
    settings = settings_for("gone", "x=float:0:1")  # created long ago, its tasks removed
    with StudyStorage(redis_url) as storage:
        storage.create(settings)
    stored.save(store.redis, settings)
    line = invoke("gc", "--older-than", "0s").stdout
    assert "; 1 study(ies) with no task left" in line
    assert not store.redis.exists(keys.study("gone"), keys.sweep_name("gone"))
    assert not store.redis.keys(keys.OPTUNA_JOURNAL + "*")


def test_gc_older_than_30d_keeps_what_ended_later(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis
) -> None:
    month = 30 * 86400
    ages = {"31d": 31 * 86400, "29d": 29 * 86400}
    ids = {}
    for label, age in ages.items():
        ids[label] = task_id = _task(store)
        _run(store, task_id)
        record = json.loads(redis_client.get(keys.task(task_id)) or b"")
        record["created"] = record["ended"] = time.time() - age  # as if it ended then
        redis_client.set(keys.task(task_id), json.dumps(record))
        redis_client.zadd(keys.BY_CREATED, {task_id: time.time() - age})
    live = _task(store)
    redis_client.zadd(keys.BY_CREATED, {live: time.time() - 2 * month})  # old but still queued
    assert invoke("gc", "--older-than", "30d").stdout.startswith("removed 1 task(s)")
    assert not redis_client.exists(keys.task(ids["31d"]))
    assert store.get(ids["29d"]).status is TaskStatus.FINISHED
    assert store.get(live).status is TaskStatus.QUEUED


@pytest.mark.parametrize("command", ["ls", "queues", "workers"])
def test_lost_tasks_are_reaped_by_every_command(
    cli_env: Repo,
    store: TaskStore,
    redis_client: redis.Redis,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run first (or alone), the test meets a session Redis younger than the settle time.
    monkeypatch.setattr("overnight.queue.reaper.REAP_SETTLE", 0.0)
    task_id = _task(store)
    store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1"))
    redis_client.delete(keys.heartbeat(task_id))
    assert invoke(command).exit_code == 0
    assert store.get(task_id).status is TaskStatus.LOST


def test_tasks_no_agent_can_run_are_flagged(
    cli_env: Repo, store: TaskStore, redis_client: redis.Redis
) -> None:
    from overnight.queue.agents import AgentInfo, AgentRegistry

    AgentRegistry(redis_client).register(
        AgentInfo(name="box1", host="h", queues=("gpu",), gpus=("0", "1"))
    )
    big = _task(store, queue="gpu", gpus=8)
    fine = _task(store, queue="gpu", gpus=1)
    out = invoke("ls").stdout
    assert f"! no agent offers 8 GPUs on queue gpu: {big}" in out and fine not in out.split("!")[1]
    assert "warning:      no agent offers 8 GPUs on queue gpu" in invoke("show", big).stdout
    rows = {r["id"]: r["problem"] for r in json.loads(invoke("ls", "--json").stdout)}
    assert rows == {big: "no agent offers 8 GPUs on queue gpu", fine: None}


@pytest.mark.slow
def test_redis_going_away_midway_is_one_line(
    cli_env: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    try:
        store = TaskStore(redis.Redis.from_url(server.url))
        task_id = _task(store)
        store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1"), heartbeat_ttl=600)
        monkeypatch.setenv("OVERNIGHT_REDIS_URL", server.url)
        threading.Timer(0.5, server.stop).start()
        result = invoke("wait", task_id)
    finally:
        server.stop()
    assert result.exit_code == ExitCode.CONNECTION
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"overnight: error: lost the connection to Redis at {server.url}")


def test_logs_follow_waits_out_a_redis_outage(
    cli_env: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        store = TaskStore(client)
        task_id = _task(store)
        store.transition(task_id, TaskStatus.RUNNING, Change(agent="box1"), heartbeat_ttl=600)
        store.logs.append(task_id, [(1.0, "before")])
        monkeypatch.setenv("OVERNIGHT_REDIS_URL", server.url)

        def outage() -> None:
            time.sleep(0.5)
            client.shutdown(save=True)  # kept on disk: the same data comes back
            assert server.proc is not None
            server.proc.wait(10)
            time.sleep(1.5)
            server.start()
            store.logs.append(task_id, [(2.0, "after")])
            store.transition(task_id, TaskStatus.FINISHED, Change(exit_code=0))

        thread = threading.Thread(target=outage)
        thread.start()
        result = invoke("logs", "-f", task_id)
        thread.join()
    finally:
        client.close()
        server.stop()
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["before", "after"]
    waited, back = result.stderr.strip().splitlines()
    assert waited.startswith("overnight: Redis is unreachable (") and "waiting for it" in waited
    assert back == "overnight: Redis answers again; following the log"


def test_show_json_masks_secret_env_values_unless_asked(cli_env: Repo, store: TaskStore) -> None:
    snapshot = make_snapshot(requirements="-i https://ada:hunter2@pypi.example/simple\nsix\n")
    env = {"SEED": "1", "HF_TOKEN": "hf_abcdefghijklmnopqrstu", "DB": "postgres://a:pw@h/d"}
    spec = dataclasses.replace(snapshot.spec, env=env)  # recorded with --allow-secret-env
    task_id = submit(store, dataclasses.replace(snapshot, spec=spec), TaskOptions()).id
    shown = invoke("show", task_id, "--json").stdout
    data = json.loads(shown)
    assert data["spec"]["env"] == {"SEED": "1", "HF_TOKEN": "***", "DB": "***"}
    assert data["spec"]["requirements"]["text"] == "-i https://pypi.example/simple\nsix\n"
    for secret in ("hf_abc", "pw@", "hunter2"):
        assert secret not in shown and secret not in invoke("show", task_id).stdout
    revealed = json.loads(invoke("show", task_id, "--json", "--show-secrets").stdout)
    assert revealed["spec"]["env"] == env


def _sweep(store: TaskStore, *lrs: str, note: str = "") -> list[TaskRecord]:
    snapshot = make_snapshot(("python", "train.py", "--lr", "1"), note=note)
    return submit_sweep(store, snapshot, TaskOptions(queue="gpu"), [Sweep("lr", lrs)])


def test_ls_filters_by_sweep_grep_and_param(cli_env: Repo, store: TaskStore) -> None:
    swept = [r.id for r in _sweep(store, "0.1", "0.01", "0.001")]
    sweep = store.get(swept[0]).sweep
    assert sweep is not None
    lone = submit(store, make_snapshot(("python", "eval.py", "--lr", "0.1"), note="Final eval"),
                  TaskOptions()).id  # fmt: skip

    def listed(*args: str) -> list[str]:
        result = invoke("ls", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.stdout)]

    assert listed("--sweep", sweep[:6]) == swept[::-1]
    assert listed("--sweep", swept[1]) == swept[::-1]  # a task's id names its sweep
    assert listed("--sweep", sweep, "--param", "lr=0.01") == [swept[1]]
    assert listed("--param", "lr=0.1") == [lone, swept[0]]
    assert listed("--param", "lr=0.1", "--param", "--queue=gpu") == []
    assert listed("--grep", "final EVAL") == [lone]  # the note, in any case
    assert listed("--grep", "train.py") == swept[::-1]  # the command
    assert invoke("ls", "--grep", "nothing").stdout.strip() == "no tasks match"
    unknown = invoke("ls", "--sweep", "f" * 12)
    assert unknown.exit_code == ExitCode.NOT_FOUND
    assert unknown.stderr.count("\n") == 1 and "no sweep or task" in unknown.stderr
    not_swept = invoke("ls", "--sweep", lone)
    assert not_swept.exit_code == ExitCode.NOT_FOUND and "is in no sweep" in not_swept.stderr
    assert invoke("ls", "--param", "lr").exit_code == ExitCode.USAGE


def test_ls_sorts_by_a_metric_with_metric_columns_and_the_note(
    cli_env: Repo, store: TaskStore
) -> None:
    runs = _sweep(store, "0.1", "0.01", "0.001", "0.0001", note="warmup \x1b[31mred " + "x" * 40)
    for record, (loss, acc) in zip(runs, [(0.5, 0.7), (0.2, 0.9), (0.3, 0.8)], strict=False):
        finish(store, record.id, loss=loss, acc=acc)  # the last one has not reported yet
    sweep = runs[0].sweep
    assert sweep is not None
    out = invoke("ls", "--sweep", sweep, "--sort", "-acc", "--metric", "loss").stdout
    header, _, *rows = out.splitlines()
    rows = rows[:4]  # then the warning that no agent serves queue gpu
    assert header.split()[:5] == ["ID", "TASK", "PARAMS", "loss", "acc"]
    assert header.split()[-1] == "NOTE"
    assert [row.split()[0] for row in rows] == [runs[i].id for i in (1, 2, 0, 3)]
    assert rows[0].split()[6:8] == ["0.2", "0.9"] and rows[3].split()[6:8] == ["-", "-"]
    assert "warmup \\x1b[31mred xxx" in rows[0] and "\x1b" not in out and "x" * 40 not in out
    assert rows[0].endswith("…")
    ascending = invoke("ls", "--sweep", sweep, "--sort", "loss:min", "--json", "-n", "2").stdout
    assert [r["id"] for r in json.loads(ascending)] == [runs[1].id, runs[2].id]
    by_param = invoke("ls", "--sweep", sweep, "--sort", "lr", "--json").stdout
    assert [r["params"]["lr"] for r in json.loads(by_param)] == ["0.0001", "0.001", "0.01", "0.1"]
    bad = invoke("ls", "--sweep", sweep, "--sort", "-accuracy")
    assert bad.exit_code == ExitCode.USAGE
    assert "metrics: acc, loss" in bad.stderr and bad.stderr.count("\n") == 1
    missing = invoke("ls", "--sweep", sweep, "--metric", "bleu")
    assert missing.exit_code == 0 and "no selected task has the metric bleu" in missing.stderr


def test_ls_csv_is_the_table_for_pandas(cli_env: Repo, store: TaskStore) -> None:
    runs = _sweep(store, "0.1", "0.01")
    finish(store, runs[0].id, loss=0.25)
    result = invoke("ls", "--sweep", runs[0].id, "--sort", "loss", "--metric", "loss:min", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == [runs[0].id, runs[1].id]
    assert rows[0]["params.lr"] == "0.1" and rows[0]["metrics.loss:min"] == "0.25"
    assert rows[0]["metrics.loss"] == "0.25" and rows[1]["metrics.loss"] == ""
    assert rows[0]["status"] == "finished" and rows[0]["sweep"] == runs[0].sweep
    assert invoke("ls", "--csv", "--json").exit_code == ExitCode.USAGE


def test_wait_and_cancel_take_a_sweep(cli_env: Repo, store: TaskStore) -> None:
    runs = _sweep(store, "0.1", "0.01", "0.001")
    other = _task(store)
    finish(store, runs[0].id, loss=0.1)
    canceled = invoke("cancel", "--sweep", runs[0].sweep or "")
    assert canceled.exit_code == 0, canceled.output
    assert canceled.stdout.splitlines() == [f"{runs[1].id} canceled", f"{runs[2].id} canceled"]
    assert store.get(other).status is TaskStatus.QUEUED
    waited = invoke("wait", "--sweep", runs[2].id, "--timeout", "10s")
    assert waited.exit_code == ExitCode.FAILURE  # two of them did not finish
    assert waited.stdout.splitlines() == [
        f"{runs[0].id} finished",
        f"{runs[1].id} canceled",
        f"{runs[2].id} canceled",
    ]
    assert invoke("wait").exit_code == ExitCode.USAGE
    again = invoke("cancel", "--sweep", runs[0].id)
    assert (
        again.exit_code == 0
        and again.stdout == f"every task of sweep {runs[0].sweep} has ended already\n"
    )


def test_a_retry_stays_in_the_sweep_and_a_clone_joins_only_if_asked(
    cli_env: Repo, store: TaskStore
) -> None:
    runs = _sweep(store, "0.1", "0.01")
    finish(store, runs[0].id, exit_code=1)
    retried = invoke("retry", runs[0].id).stdout.strip()
    cloned = invoke("clone", runs[1].id, "--set", "lr=0.5").stdout.strip()
    joined = invoke("clone", runs[1].id, "--set", "lr=0.3", "--in-sweep").stdout.strip()
    assert store.get(retried).sweep == store.get(joined).sweep == runs[0].sweep
    assert store.get(cloned).sweep is None
    listed = json.loads(invoke("ls", "--sweep", runs[0].sweep or "", "--json").stdout)
    assert {r["id"] for r in listed} == {runs[0].id, runs[1].id, retried, joined}
    refused = invoke("clone", cloned, "--in-sweep")
    assert refused.exit_code == ExitCode.USAGE and "is in no sweep" in refused.stderr
