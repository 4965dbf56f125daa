from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from overnight.agent.gpus.inventory import FakeInventory
from overnight.agent.run.monitor import (
    GPUProbe,
    GPUSampler,
    Monitor,
    ProcessTreeSampler,
    Series,
    describe_resources,
    tree_pids,
)
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import enqueue
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import gpu_agent

# A parent holding 64 MB that starts two busy children, then says so.
BUSY_TREE = """
import subprocess, sys
ballast = bytearray(64 * 1024 * 1024)
for i in range(len(ballast) // 4096):
    ballast[i * 4096] = 1
children = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
print("ready", flush=True)
sys.stdin.read()
for c in children:
    c.kill()
"""


@pytest.fixture
def busy_tree() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_TREE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


def wait_until(predicate: Any, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


def test_process_tree_cpu_and_rss(busy_tree: subprocess.Popen[str]) -> None:
    assert len(tree_pids(busy_tree.pid)) == 3
    sampler = ProcessTreeSampler(busy_tree.pid)
    first = sampler.sample()
    assert first["processes"] == 3
    assert first["rss_mb"] > 64
    assert "cpu_pct" not in first  # a rate needs two samples
    time.sleep(0.3)  # lets the children burn some CPU; the assert is only that some was seen
    second = sampler.sample()
    assert second["processes"] == 3
    assert second["cpu_pct"] > 0


def test_process_tree_gone_is_no_sample() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert ProcessTreeSampler(proc.pid).sample() == {}
    assert tree_pids(proc.pid) == set()


@pytest.mark.slow
def test_monitor_samples_tree_and_fake_gpus(busy_tree: subprocess.Popen[str]) -> None:
    inv = FakeInventory.with_gpus(2)
    inv.set_usage(0, utilization_pct=90.0, memory_used_mb=12000.0)
    inv.set_usage(1, utilization_pct=40.0, memory_used_mb=3000.0)
    probe = GPUProbe(inv, warn=pytest.fail)
    monitor = Monitor(
        [ProcessTreeSampler(busy_tree.pid), GPUSampler(probe, ("0", "1"))], interval=0.05
    )
    with monitor:
        wait_until(lambda: monitor.summary().get("cpu_pct", {}).get("samples", 0) >= 3)
        inv.set_usage(0, utilization_pct=100.0, memory_used_mb=15000.0)
        wait_until(lambda: monitor.latest().get("gpu0.mem_mb") == 15000.0)
    summary = monitor.summary()
    assert summary["cpu_pct"]["peak"] > 0
    assert summary["rss_mb"]["peak"] > 64
    assert summary["gpu0.mem_mb"]["peak"] == 15000.0
    assert 12000.0 <= summary["gpu0.mem_mb"]["mean"] < 15000.0
    assert summary["gpu1.util_pct"]["mean"] == 40.0
    assert summary["gpu_mem_mb"]["peak"] == 18000.0
    report = json.loads(json.dumps(monitor.report()))
    assert report["off"] == {}
    assert len(report["series"]["gpu0.mem_mb"]) == summary["gpu0.mem_mb"]["samples"]
    times = [t for t, _ in report["series"]["rss_mb"]]
    assert times == sorted(times)


def test_nvml_failure_switches_gpu_sampling_off_once_for_the_agent() -> None:
    inv = FakeInventory.with_gpus(2)
    warnings: list[str] = []
    probe = GPUProbe(inv, warn=warnings.append)
    steady_calls: list[int] = []

    class Steady:
        name = "steady"

        def sample(self) -> Mapping[str, float]:
            steady_calls.append(1)
            return {"steady": 1.0}

    first = Monitor([Steady(), GPUSampler(probe, ("0",))])
    second = Monitor([GPUSampler(probe, ("1",))])
    assert "gpu0.util_pct" in first.sample_once()
    inv.fail = "NVML_ERROR_GPU_IS_LOST"
    calls = inv.calls
    for _ in range(3):
        assert first.sample_once() == {"steady": 1.0}
        assert second.sample_once() == {}
    assert warnings == ["GPU monitoring is off for this agent: NVML_ERROR_GPU_IS_LOST"]
    assert inv.calls == calls + 1  # switched off: NVML is not asked again
    assert probe.off_reason == "NVML_ERROR_GPU_IS_LOST"
    assert len(steady_calls) == 4


def test_a_failing_sampler_warns_once_and_the_others_go_on() -> None:
    class Broken:
        name = "docker"

        def sample(self) -> Mapping[str, float]:
            raise RuntimeError("container vanished")

    class Counter:
        name = "count"
        n = 0.0

        def sample(self) -> Mapping[str, float]:
            self.n += 1
            return {"n": self.n}

    warnings: list[str] = []
    monitor = Monitor([Broken(), Counter()], warn=warnings.append)
    for _ in range(3):
        monitor.sample_once()
    assert warnings == ["docker monitoring is off for this task: container vanished"]
    assert monitor.summary()["n"] == {"peak": 3.0, "mean": 2.0, "last": 3.0, "samples": 3}
    assert monitor.report()["off"] == {"docker": "container vanished"}


def test_a_failing_warning_sink_does_not_raise() -> None:
    def broken_log(message: str) -> None:
        raise OSError("log is gone")

    inv = FakeInventory.with_gpus(1)
    inv.fail = "lost"
    monitor = Monitor([GPUSampler(GPUProbe(inv, warn=broken_log), ("0",))], warn=broken_log)
    assert monitor.sample_once() == {}


def test_series_is_bounded_and_keeps_the_whole_run() -> None:
    series = Series(720)
    for i in range(100_000):
        series.add(float(i), float(i % 1000))
    points = series.points()
    assert 360 <= len(points) <= 720
    assert points[0] == (0.0, 0.0)
    assert points[-1][0] > 99_000 - 100_000 / 360
    gaps = {b[0] - a[0] for a, b in itertools.pairwise(points)}
    assert len(gaps) == 1  # evenly spaced
    assert series.summary()["peak"] == 999.0
    assert series.summary()["mean"] == pytest.approx(499.5)
    assert series.samples == 100_000


def test_describe_resources_for_show() -> None:
    inv = FakeInventory.with_gpus(2)
    cpu = iter([50.0, 100.0])

    class Tree:
        name = "process"

        def sample(self) -> Mapping[str, float]:
            return {"cpu_pct": next(cpu), "rss_mb": 900.0, "processes": 2.0}

    probe = GPUProbe(inv, warn=pytest.fail)
    monitor = Monitor([Tree(), GPUSampler(probe, ("1",))])
    inv.set_usage(1, utilization_pct=80.0, memory_used_mb=20480.0)
    monitor.sample_once()
    inv.set_usage(1, utilization_pct=100.0, memory_used_mb=40960.0)
    monitor.sample_once()
    assert describe_resources(monitor.report()) == [
        "CPU: peak 100 %, mean 75 %",
        "RSS: peak 900 MB, mean 900 MB",
        "GPU memory (all): peak 40.0 GB, mean 30.0 GB",
        "GPU 1 memory: peak 40.0 GB, mean 30.0 GB",
        "GPU 1 utilisation: peak 100 %, mean 90 %",
    ]
    assert describe_resources({"summary": {}, "off": {"gpu": "lost"}}) == [
        "gpu monitoring was off: lost"
    ]


@pytest.mark.slow
def test_gpu_monitoring_failure_is_one_warning_and_never_fails_a_task(
    agent_store: TaskStore,
    project: Repo,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inventory = FakeInventory.with_gpus(1)
    daemon = gpu_agent(redis_url, tmp_path / "agent", venv_cache, inventory, monitor_interval=0.05)
    inventory.fail = "NVML: Unknown Error"  # the driver goes away after the agent started
    tasks = [enqueue(agent_store, project, "--ticks", "2", gpus=1) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="overnight"):
        daemon.run(burst=True)
    for task in tasks:
        record = agent_store.get(task.id)
        assert record.status is TaskStatus.FINISHED
        summary = record.extra["resources"]["summary"]
        assert "rss_mb" in summary
        assert not any(metric.startswith("gpu") for metric in summary)
        assert record.extra["hardware"]["gpu_error"] == "NVML: Unknown Error"
    off = [r for r in caplog.records if "GPU monitoring is off" in r.getMessage()]
    assert [r.getMessage() for r in off] == [
        "GPU monitoring is off for this agent: NVML: Unknown Error"
    ]
