"""A run's metrics through a real agent: its output lines and a --metrics CSV file, summarised
on the record while it runs and at its end, with a series per metric in its own key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from overnight.agent.config import AgentConfig
from overnight.agent.run.logbatch import LineEnd, Notice, Partial
from overnight.agent.run.metricfeed import MetricFeed
from overnight.metrics.summary import MetricSummary
from overnight.metrics.tracker import MetricTracker
from overnight.queue import keys
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    log_text,
    make_daemon,
    wait_for,
    wait_status,
)
from tests.fixtures.gitrepo import Repo

TRAIN = textwrap.dedent(
    """\
    import json, os, sys, time
    from pathlib import Path
    out = Path(os.environ["OVERNIGHT_OUTPUT_DIR"])
    csv = open(out / "metrics.csv", "w")
    csv.write("epoch,val_acc,note\\n")
    print("Loading 3 files", flush=True)
    print("Epoch 3/10 done in 5s", flush=True)
    for step in range(3):
        print(f"step={step} loss={2.0 - step / 2:.2f}", flush=True)
        csv.write(f"{step},{0.5 + step / 10:.2f},ok\\n")
        csv.flush()
    print("\\x1b[32macc: 0.9\\x1b[0m", flush=True)
    print(json.dumps({"step": 7, "lr": 0.001, "tag": "warm"}), flush=True)
    csv.write("3,0.9")  # no newline yet: held back until the run's end
    csv.flush()
    print("waiting", flush=True)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.05)
    csv.write("5\\n4,0.99,end\\n")
    csv.close()
    sys.stdout.write("loss: 0.1")  # ends in a piece written over several flushes
    sys.stdout.flush()
    time.sleep(1.0)
    print("25", flush=True)
    """
)


@pytest.mark.slow
def test_a_run_reports_its_metrics_from_output_and_a_metrics_file(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    go = tmp_path / "go"
    snap = take_snapshot(
        project.path,
        ["python", "-c", TRAIN, str(go)],
        SnapshotOptions(metric_files=("outputs/metrics.csv",)),
    )
    assert snap.spec.metric_files == ("outputs/metrics.csv",)
    record = enqueue(agent_store, project, snapshot=snap)
    config: AgentConfig = agent_config(
        redis_url, tmp_path / "agent", venv_cache, report_interval=0.2, monitor_interval=0.2
    )

    def reported() -> bool:
        metrics = agent_store.get(record.id).metrics
        return "lr" in metrics and "val_acc" in metrics and metrics["val_acc"].last == 0.7

    agent = Background(make_daemon(config))
    try:
        wait_for(reported, what="the running task's metrics on its record")
        running = agent_store.get(record.id)
        assert running.status is TaskStatus.RUNNING
        assert running.metrics["loss"] == MetricSummary(1.0, 1.0, 2.0, 3, 2.0, 2.0, 0.0)
        assert running.metrics["val_acc"].count == 3  # the line without its newline waits
        go.touch()
        done = wait_status(agent_store, record.id, TaskStatus.FINISHED)
    finally:
        agent.stop()
    assert "waiting" in log_text(agent_store, record.id)
    metrics = done.metrics
    assert set(metrics) == {"loss", "acc", "lr", "val_acc"}  # no prose, no step, no text column
    assert metrics["loss"] == MetricSummary(
        last=0.125, min=0.125, max=2.0, count=4, last_step=7.0, min_step=7.0, max_step=0.0
    )  # "loss: 0.1" + "25", at the step the JSON line set
    assert metrics["acc"] == MetricSummary.first(0.9, 2.0)
    assert metrics["lr"] == MetricSummary.first(0.001, 7.0)
    assert metrics["val_acc"] == MetricSummary(0.99, 0.5, 0.99, 5, 4.0, 0.0, 4.0)
    series = agent_store.metric_series(record.id)
    assert [(step, value) for _, step, value in series["loss"]] == [
        (0.0, 2.0),
        (1.0, 1.5),
        (2.0, 1.0),
        (7.0, 0.125),
    ]
    assert [value for _, _, value in series["val_acc"]] == [0.5, 0.6, 0.7, 0.95, 0.99]
    assert all(at >= 0 for at, _, _ in series["loss"])
    assert agent_store.redis.exists(keys.metric_series(record.id))


def test_the_feed_puts_pieces_together_and_passes_notices_over() -> None:
    tracker = MetricTracker()
    feed = MetricFeed(tracker)
    feed.observe(
        [
            (0.0, Notice("[overnight] loss: 9")),
            (0.0, Partial("loss: 0.")),
            (0.0, Partial("12")),
            (0.0, LineEnd("5")),
            (0.0, Partial("acc=0.5")),  # ended right after: the next line is a new one
            (0.0, "acc=0.75"),
        ]
    )
    feed.stop()
    assert tracker.summaries() == {
        "loss": MetricSummary.first(0.125),
        "acc": MetricSummary(0.75, 0.5, 0.75, 2),
    }


def test_a_write_is_skipped_when_nothing_changed(agent_store: TaskStore) -> None:
    tracker = MetricTracker()
    feed = MetricFeed(tracker)
    assert feed.write(agent_store, "nosuchtask", agent="a", expect={TaskStatus.RUNNING})
    feed.observe([(0.0, "loss: 1")])
    assert not feed.write(agent_store, "nosuchtask", agent="a", expect={TaskStatus.RUNNING})
