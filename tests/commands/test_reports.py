from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from overnight.agent.gpus.inventory import FakeInventory
from overnight.cli import cli
from overnight.commands.reports import (
    offer_problem,
    peak_gpu_memory_mb,
    render_summary,
    render_top,
    summary_report,
    tasks_since,
)
from overnight.errors import ExitCode
from overnight.queue import keys
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.failures import FailureKind
from overnight.queue.records import Change, Phase, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from tests.fixtures.agents import Background, enqueue, wait_for, wait_status
from tests.fixtures.cli import run_cli
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import cli_output, gpu_agent, wait_output
from tests.fixtures.tasks import finish, make_snapshot, redis_client, store

__all__ = ["redis_client", "store"]

NOW = 1_704_700_000.0  # Mon 2024-01-08, about 08:00 in Europe


def record(task_id: str, status: TaskStatus, **fields: object) -> TaskRecord:
    base: dict[str, object] = {
        "id": task_id,
        "spec_id": "s",
        "options": TaskOptions(queue="gpu", gpus=1),
    }
    base.update(fields)
    return TaskRecord(status=status, **base)  # type: ignore[arg-type]


def resources(peak_mb: float, last_util: float = 90.0) -> dict[str, object]:
    return {
        "summary": {
            "gpu_mem_mb": {"peak": peak_mb, "mean": peak_mb / 2, "last": peak_mb, "samples": 3},
            "gpu0.util_pct": {"peak": 100.0, "mean": 80.0, "last": last_util, "samples": 3},
        }
    }


def agent(**fields: object) -> AgentInfo:
    base: dict[str, object] = {
        "name": "box-1",
        "host": "box",
        "queues": ("gpu",),
        "gpus": ("0", "1"),
    }
    base.update(fields)
    return AgentInfo(**base)  # type: ignore[arg-type]


def test_offer_problem_flags_tasks_no_agent_can_run() -> None:
    big = record("a" * 12, TaskStatus.QUEUED, options=TaskOptions(queue="gpu", gpus=8))
    assert offer_problem(big, [agent()]) == "no agent offers 8 GPUs on queue gpu"
    assert offer_problem(big, [agent(gpus=tuple(str(i) for i in range(8)))]) is None
    assert offer_problem(big, [agent(queues=("cpu",))]) == "no live agent serves queue gpu"
    running = record("b" * 12, TaskStatus.RUNNING, options=TaskOptions(queue="gpu", gpus=8))
    assert offer_problem(running, []) is None


def test_summary_counts_and_rows() -> None:
    records = [
        record(
            "1" * 32,
            TaskStatus.FINISHED,
            name="sweep-1",
            params={"lr": "0.01"},
            started=NOW - 7200,
            ended=NOW - 3600,
            exit_code=0,
            extra={"resources": resources(20480.0)},
        ),
        record(
            "2" * 32,
            TaskStatus.FAILED,
            argv=("python", "train.py"),
            started=NOW - 600,
            ended=NOW - 300,
            exit_code=1,
            phase=Phase.RUN,
            error="RuntimeError: CUDA out of memory\nTraceback...",
        ),
        record("3" * 32, TaskStatus.RUNNING, name="sweep-3", started=NOW - 65),
    ]
    report = summary_report(records, NOW - 16 * 3600, NOW)
    assert report["counts"] == {"finished": 1, "failed": 1, "running": 1}
    assert report["tasks"][0]["peak_gpu_mem_mb"] == 20480.0
    assert report["tasks"][1]["error"] == "RuntimeError: CUDA out of memory"
    assert report["tasks"][2]["duration"] == 65
    json.dumps(report)
    lines = render_summary(report)
    assert lines[0].endswith(": 3 tasks: 1 finished, 1 failed, 1 running")
    assert lines[1].split() == [
        "ID",
        "STATUS",
        "NAME",
        "PARAMS",
        "DURATION",
        "EXIT",
        "PEAK",
        "GPU",
        "MEM",
    ]
    assert lines[2].split() == [
        "1" * 12,
        "finished",
        "sweep-1",
        "lr=0.01",
        "1h00m",
        "0",
        "20.0",
        "GB",
    ]
    assert "python train.py" in lines[3] and "5m00s" in lines[3]
    assert lines[4].strip() == "error: [run] RuntimeError: CUDA out of memory"
    assert lines[5].split()[:4] == ["3" * 12, "running", "sweep-3", "1m05s"]
    assert render_summary(summary_report([], NOW, NOW))[0].endswith(": 0 tasks")


def test_summary_groups_failures_by_kind() -> None:
    def failed(n: int, kind: FailureKind, status: TaskStatus = TaskStatus.FAILED) -> TaskRecord:
        return record(str(n) * 32, status, phase=Phase.RUN, error="boom", failure=kind)

    records = [
        failed(1, FailureKind.RUN),
        failed(2, FailureKind.SETUP),
        failed(3, FailureKind.RUN),
        failed(4, FailureKind.INFRA, TaskStatus.LOST),
        failed(5, FailureKind.OOM),
        record("6" * 32, TaskStatus.FINISHED),
    ]
    report = summary_report(records, NOW - 3600, NOW)
    assert report["failures"] == {"setup": 1, "run": 2, "infra": 1, "oom": 1}
    assert [t["failure"] for t in report["tasks"]] == ["run", "setup", "run", "infra", "oom", None]
    lines = render_summary(report)
    assert lines[1] == (
        "failures by kind: 1 setup failure, 2 run failure, 1 infrastructure failure, "
        "1 infrastructure failure (OOM kill)"
    )
    assert any(
        line.strip() == "error: [run] boom (infrastructure failure (OOM kill))" for line in lines
    )


def test_top_shows_gpus_slots_windows_and_tasks() -> None:
    running = record(
        "c" * 32,
        TaskStatus.RUNNING,
        name="train",
        params={"lr": "0.1"},
        started=NOW - 90,
        gpu_ids=("0",),
    )
    waiting = record(
        "d" * 32, TaskStatus.QUEUED, options=TaskOptions(queue="gpu", gpus=4), name="big"
    )
    box = agent(
        state="busy",
        tasks=(running.id,),
        heartbeat=NOW - 2,
        started=NOW - 3600,
        extra={
            "slots": {
                "gpus": {
                    "0": {"task": running.id},
                    "1": {"unavailable": "5000 MB in use by processes overnight did not start"},
                },
                "cpu_slots": 1,
                "cpu_tasks": [],
                "reserved": [{"task": waiting.id, "gpus": 2}],
            },
            "windows": {"uptime": ["fri 19:00-mon 07:00"], "state": "closed until fri 19:00"},
            "usage": {
                running.id: {"gpu0.util_pct": 97.0, "gpu0.mem_mb": 20480.0, "cpu_pct": 101.0}
            },
        },
    )
    lines = render_top([box], {r.id: r for r in (running, waiting)}, NOW)
    assert lines[0].split("  ") == [
        "box-1",
        "busy",
        "queues gpu",
        "venv",
        "up 1h00m",
        "beat 2s ago",
        "window closed until fri 19:00",
    ]
    assert lines[1] == f"  GPU 0  {'c' * 12}  util 97 %  mem 20.0 GB"
    assert lines[2] == "  GPU 1  held back: 5000 MB in use by processes overnight did not start"
    assert lines[3] == "  CPU slots: 0 of 1 busy"
    assert lines[4] == f"  waiting for room: {'d' * 12} (2 GPUs)"
    assert lines[5].split("  ") == ["", "c" * 12, "running", "1m30s", "train lr=0.1", "cpu 101 %"]
    assert lines[6] == "waiting: gpu 1"
    assert lines[7] == f"  {'d' * 12} big: no agent offers 4 GPUs on queue gpu"
    assert render_top([], {}, NOW) == ["no live agents"]


def test_top_falls_back_to_the_record_resources() -> None:
    running = record(
        "e" * 32, TaskStatus.RUNNING, started=NOW - 5, extra={"resources": resources(4096.0, 55.0)}
    )
    box = agent(tasks=(running.id,), extra={"slots": {"gpus": {"0": {"task": running.id}}}})
    lines = render_top([box], {running.id: running}, NOW)
    assert f"  GPU 0  {'e' * 12}  util 55 %  mem -" in lines
    assert any("gpu mem 4.0 GB" in line for line in lines)
    assert peak_gpu_memory_mb(running) == 4096.0
    assert peak_gpu_memory_mb(record("f", TaskStatus.FINISHED)) is None


def _run(store: TaskStore, *, gpus: int, status: TaskStatus, **fields: Any) -> TaskRecord:
    rec = submit(store, make_snapshot(name=f"t{gpus}"), TaskOptions(queue="gpu", gpus=gpus))
    store.transition(rec.id, TaskStatus.PREPARING, Change(agent="box-1"))
    store.transition(rec.id, TaskStatus.RUNNING)
    return store.transition(rec.id, status, Change(**fields))


def test_summary_and_top_commands_read_redis(store: TaskStore, redis_url: str) -> None:
    _run(
        store,
        gpus=1,
        status=TaskStatus.FINISHED,
        exit_code=0,
        extra={"resources": resources(8192.0)},
    )
    _run(
        store,
        gpus=1,
        status=TaskStatus.FAILED,
        exit_code=2,
        phase=Phase.RUN,
        error="ValueError: bad lr",
    )
    queued = submit(store, make_snapshot(name="huge"), TaskOptions(queue="gpu", gpus=8))
    AgentRegistry(store.redis).register(agent(heartbeat=time.time(), started=time.time()))
    runner = CliRunner()
    result = runner.invoke(cli, ["summary", "--since", "16h", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    head = result.output.splitlines()[0]
    assert ": 3 tasks: " in head
    assert all(f"1 {status}" in head for status in ("queued", "finished", "failed"))
    assert "8.0 GB" in result.output
    assert "error: [run] ValueError: bad lr" in result.output
    as_json = runner.invoke(cli, ["summary", "--json", "--since", "1h", "--redis-url", redis_url])
    assert json.loads(as_json.output)["counts"] == {"queued": 1, "finished": 1, "failed": 1}
    # tasks from before the window are left out
    later = runner.invoke(
        cli, ["summary", "--since", "2100-01-01", "--json", "--redis-url", redis_url]
    )
    assert json.loads(later.output)["tasks"] == []
    top = runner.invoke(cli, ["top", "--once", "--redis-url", redis_url])
    assert top.exit_code == 0, top.output
    assert "box-1" in top.output
    assert f"{queued.id[:12]} huge: no agent offers 8 GPUs on queue gpu" in top.output
    top_json = json.loads(runner.invoke(cli, ["top", "--json", "--redis-url", redis_url]).output)
    assert [a["name"] for a in top_json["agents"]] == ["box-1"]
    assert [t["id"] for t in top_json["tasks"]] == [queued.id]


def test_summary_rejects_a_bad_since(redis_url: str) -> None:
    result = CliRunner().invoke(cli, ["summary", "--since", "yesterday", "--redis-url", redis_url])
    assert result.exit_code == 2
    assert "invalid --since 'yesterday'" in result.output


def test_summary_window_counts_tasks_that_ended_in_it(store: TaskStore) -> None:
    now = time.time()
    ended_late = _run(store, gpus=1, status=TaskStatus.FINISHED, exit_code=0)
    ended_early = _run(store, gpus=1, status=TaskStatus.FINISHED, exit_code=0)
    for rec, ended in ((ended_late, now - 3600), (ended_early, now - 20 * 3600)):
        old = dataclasses.replace(rec, created=now - 3 * 86400, started=ended - 60, ended=ended)
        store.redis.set(keys.task(rec.id), old.to_json())
    assert [r.id for r in tasks_since(store, now - 16 * 3600)] == [ended_late.id]


@pytest.mark.slow
def test_reports_of_tasks_a_real_agent_ran(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    inventory = FakeInventory.with_gpus(1, name="Fake H100", memory_mb=81920.0)
    flag = tmp_path / "flag"
    # First in line, and no agent can run it: it must not hold back the tasks behind it.
    huge = enqueue(agent_store, project, name="huge", queue="gpu", gpus=8)
    train = enqueue(
        agent_store,
        project,
        "--ticks",
        "2",
        "--wait-for",
        str(flag),
        name="train",
        queue="gpu",
        gpus=1,
        timeout=60.0,
    )
    broken = enqueue(agent_store, project, "--exit", "3", name="broken", queue="gpu", gpus=0)
    agent = Background(
        gpu_agent(
            redis_url,
            tmp_path / "agent",
            venv_cache,
            inventory,
            queues=("gpu",),
            monitor_interval=0.05,
        )
    )
    try:
        wait_status(agent_store, train.id, TaskStatus.RUNNING)
        inventory.set_usage(0, utilization_pct=75.0, memory_used_mb=3000.0)  # the task's own
        top = wait_output(redis_url, "util 75 %", "top", "--once")
        assert f"GPU 0  {train.id[:12]}  util 75 %  mem 2.9 GB" in top
        # CPU use needs two samples of the process tree; the first has RSS and GPU only.
        wanted = ("CPU ", "RSS ", "GPU memory 2.9 GB", "GPU utilisation 75 %")

        def now_line() -> str | None:
            shown = cli_output(redis_url, "show", train.id).splitlines()
            now = next((line for line in shown if line.startswith("now:")), "")
            return now if all(part in now for part in wanted) else None

        wait_for(now_line, what=f"show's now: line to say {wanted}")
        assert f"{huge.id[:12]} huge: no agent offers 8 GPUs on queue gpu" in top
        listing = wait_output(redis_url, "no agent offers 8 GPUs on queue gpu", "ls")
        assert "queued !" in listing
        assert f"! no agent offers 8 GPUs on queue gpu: {huge.id}" in listing
        shown = cli_output(redis_url, "show", huge.id)
        assert "warning:      no agent offers 8 GPUs on queue gpu" in shown
        assert "agent agent-a cannot run it: the task needs 8 GPUs; this agent offers 1" in shown
        wait_status(agent_store, broken.id, TaskStatus.FAILED)
        flag.touch()
        done = wait_status(agent_store, train.id, TaskStatus.FINISHED)
    finally:
        flag.touch()
        agent.stop()
    resources = done.extra["resources"]
    assert resources["summary"]["gpu0.mem_mb"]["peak"] == 3000.0
    assert resources["summary"]["gpu0.util_pct"]["mean"] == 75.0
    assert resources["summary"]["rss_mb"]["peak"] > 0
    assert resources["summary"]["gpu_mem_mb"]["samples"] >= 2
    assert "series" not in resources  # kept apart: ls reads every record it lists
    assert len(agent_store.series(train.id)["gpu0.mem_mb"]) >= 2
    as_json = json.loads(cli_output(redis_url, "show", "--json", train.id))
    assert as_json["extra"]["resources"]["series"] == agent_store.series(train.id)
    hardware = done.extra["hardware"]
    assert hardware["gpu_model"] == "Fake H100"
    assert (hardware["gpu_count"], hardware["gpus"][0]["memory_mb"]) == (1, 81920)
    assert (hardware["driver_version"], hardware["cuda_version"]) == ("fake-1.0", "12.4")
    assert hardware["host"] and hardware["cpu_model"] and hardware["ram_gb"] > 0
    shown = cli_output(redis_url, "show", train.id)
    assert "GPU 0 memory: peak 2.9 GB, mean 2.9 GB" in shown
    assert "GPU 0 utilisation: peak 75 %, mean 75 %" in shown
    assert "RSS: peak" in shown
    summary = cli_output(redis_url, "summary", "--since", "16h")
    assert "3 tasks: " in summary.splitlines()[0]
    assert all(f"1 {s}" in summary.splitlines()[0] for s in ("finished", "failed", "queued"))
    row = next(line for line in summary.splitlines() if line.startswith(train.id[:12]))
    assert "train" in row and "ticks=2" in row and "2.9 GB" in row
    broken_row = next(line for line in summary.splitlines() if line.startswith(broken.id[:12]))
    assert "broken" in broken_row and " 3 " in broken_row
    assert "error: [run] exited with 3 (last output: done) (run failure)" in summary
    assert "failures by kind: 1 run failure" in summary.splitlines()[1]


@pytest.mark.slow
def test_a_sweep_leaderboard_end_to_end(cli_env: Repo, store: TaskStore, redis_url: str) -> None:
    """enqueue --sweep says the sweep id on stderr; summary --sweep is its table, sorted by a
    metric, as text, JSON and CSV; tasks outside the sweep, or without the metric, as they
    should be."""
    enqueued = run_cli(
        "enqueue", "-q", "cpu", "-m", "lr scan", "--sweep", "lr=0.1,0.01,0.001", "--",
        "python", "train.py", "--lr", "1", cwd=cli_env.path, OVERNIGHT_REDIS_URL=redis_url,
    )  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    ids = enqueued.stdout.split()
    assert len(ids) == 3 and all(len(i) == 12 for i in ids)
    sweep = store.get(ids[0]).sweep
    assert sweep is not None and f"sweep {sweep}: 3 task(s)" in enqueued.stderr
    assert sweep not in enqueued.stdout
    outsider = submit(store, make_snapshot(), TaskOptions(queue="cpu")).id
    finish(store, outsider, loss=0.01, acc=0.99)
    finish(store, ids[0], loss=0.4, acc=0.6)
    finish(store, ids[1], loss=0.2, acc=0.8)
    old = dataclasses.replace(store.get(ids[1]), created=time.time() - 30 * 86400)
    store.redis.set(keys.task(ids[1]), old.to_json())  # a sweep's table has no time window

    def summary(*args: str) -> str:
        result = run_cli("summary", "--sweep", sweep[:7], *args, OVERNIGHT_REDIS_URL=redis_url)
        assert result.returncode == 0, result.stderr
        return result.stdout

    head, header, *rows = summary("--metric", "loss", "--sort", "-acc").splitlines()
    assert head.startswith(f"sweep {sweep}: 3 tasks") and "2 finished, 1 queued" in head
    assert header.split() == ["ID", "STATUS", "NAME", "PARAMS", "loss", "acc", "DURATION",
                              "EXIT", "PEAK", "GPU", "MEM", "NOTE"]  # fmt: skip
    assert [row.split()[0] for row in rows] == [ids[1], ids[0], ids[2]]
    assert rows[0].split()[-8:-5] == ["lr=0.01", "0.2", "0.8"] and rows[0].endswith("lr scan")
    report = json.loads(summary("--metric", "loss", "--metric", "acc:max", "--json"))
    assert report["sweep"] == sweep and report["since"] is None
    assert report["columns"] == ["loss", "acc:max"]
    by_id = {task["id"]: task for task in report["tasks"]}
    assert by_id.keys() == set(ids)
    assert by_id[ids[0]]["metrics"] == {"loss": 0.4, "acc:max": 1.0}
    assert by_id[ids[2]]["metrics"] == {"loss": None, "acc:max": None}
    assert by_id[ids[0]]["note"] == "lr scan"
    table = list(csv.DictReader(io.StringIO(summary("--sort", "loss", "--csv"))))
    assert [row["id"] for row in table] == [ids[1], ids[0], ids[2]]
    assert table[0]["params.lr"] == "0.01" and table[0]["metrics.loss"] == "0.2"
    assert table[2]["metrics.loss"] == "" and table[0]["sweep"] == sweep
    unknown = run_cli("summary", "--sweep", sweep, "--sort", "bleu", OVERNIGHT_REDIS_URL=redis_url)
    assert unknown.returncode == ExitCode.USAGE
    assert "metrics: acc, loss" in unknown.stderr and unknown.stderr.count("\n") == 1
    windowed = json.loads(run_cli("summary", "--json", OVERNIGHT_REDIS_URL=redis_url).stdout)
    assert {task["id"] for task in windowed["tasks"]} == {outsider, ids[0], ids[2]}
