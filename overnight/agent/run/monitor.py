"""Resource use of a running task, sampled every few seconds into bounded time series.

The daemon builds one :class:`Monitor` per running task from samplers, starts it when the process
starts and stops it when it ends::

    probe = GPUProbe(inventory, warn=log)            # one per agent, shared by every task
    monitor = Monitor([ProcessTreeSampler(pid), GPUSampler(probe, gpu_ids)], interval=5.0)
    monitor.start()
    ...                                              # monitor.latest() for heartbeats / `top`,
    ...                                              # monitor.report() to the record every minute
    monitor.stop()
    record.extra["resources"] = monitor.report()     # JSON: summary (peak/mean) and series;
                                                     # the store keeps the series in its own key

A sampler is anything with a ``name`` and a ``sample() -> Mapping[str, float]`` (the
:class:`Sampler` protocol); a task's process says which read its CPU and memory
(``Process.samplers()``: a process tree's here, a container's in the docker environment). A
sampler that raises is switched off for that task with one warning; GPU errors switch GPU
sampling off for the whole agent (:class:`GPUProbe`), also with one warning. Nothing a sampler
does ever reaches the task.

Metric names: ``cpu_pct`` (percent of one core, summed over the tree), ``rss_mb`` (summed RSS, so
pages shared between forked workers count once per process), ``processes``, ``gpu<ID>.util_pct``,
``gpu<ID>.mem_mb`` (the whole device: the task holds it alone) and ``gpu_mem_mb`` (their sum).
The summary's peak and mean cover every sample; the series keeps at most ``max_points`` points per
metric by halving its resolution when full, so a three-day run keeps its whole shape.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import psutil

from overnight.agent.gpus.inventory import GPUInventory

_MB = 1024 * 1024


class Sampler(Protocol):
    """One source of metrics: returns the current value of each metric it knows."""

    name: str

    def sample(self) -> Mapping[str, float]: ...


def tree_pids(pid: int) -> set[int]:
    """``pid`` and all its descendants now alive (empty when ``pid`` is gone)."""
    try:
        root = psutil.Process(pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


class ProcessTreeSampler:
    """CPU percent and RSS of a process and all its descendants (psutil)."""

    name = "process"

    def __init__(self, pid: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.pid = pid
        self._clock = clock
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU seconds
        self._last: float | None = None

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> Mapping[str, float]:
        now = self._clock()
        cpu_delta = rss = 0.0
        seen: dict[tuple[int, float], float] = {}
        count = 0
        for proc in self._tree():
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    mem = proc.memory_info().rss
            except psutil.Error:  # it ended between listing and reading
                continue
            total = times.user + times.system
            cpu_delta += max(0.0, total - self._cpu.get(key, 0.0))
            seen[key] = total
            rss += mem
            count += 1
        last, self._last, self._cpu = self._last, now, seen
        if not count:
            return {}
        values = {"rss_mb": rss / _MB, "processes": float(count)}
        if last is not None and now > last:
            values["cpu_pct"] = 100.0 * cpu_delta / (now - last)
        return values


class GPUProbe:
    """Agent-wide GPU readings; the first failure switches them off with one warning."""

    def __init__(self, inventory: GPUInventory, *, warn: Callable[[str], None]) -> None:
        self._inventory = inventory
        self._warn = warn
        self._lock = threading.Lock()
        self.off_reason: str | None = None

    def read(self, gpu_ids: Sequence[str]) -> dict[str, tuple[float, float]]:
        """GPU id -> (utilisation %, memory MB); empty once GPU monitoring is off."""
        if self.off_reason is not None or not gpu_ids:
            return {}
        try:
            readings = {g: self._inventory.usage(int(g)) for g in gpu_ids}
        except Exception as exc:  # NVML errors of any kind must not reach the task
            self.switch_off(str(exc))
            return {}
        return {g: (u.utilization_pct, u.memory_used_mb) for g, u in readings.items()}

    def switch_off(self, reason: str) -> None:
        with self._lock:
            if self.off_reason is not None:
                return
            self.off_reason = reason
        _call_quietly(self._warn, f"GPU monitoring is off for this agent: {reason}")


class GPUSampler:
    """Utilisation and memory of a task's GPUs, through the agent's :class:`GPUProbe`."""

    name = "gpu"

    def __init__(self, probe: GPUProbe, gpu_ids: Sequence[str]) -> None:
        self._probe = probe
        self.gpu_ids = tuple(gpu_ids)

    def sample(self) -> Mapping[str, float]:
        readings = self._probe.read(self.gpu_ids)
        values: dict[str, float] = {}
        for gpu, (util, mem) in readings.items():
            values[f"gpu{gpu}.util_pct"] = util
            values[f"gpu{gpu}.mem_mb"] = mem
        if readings:
            values["gpu_mem_mb"] = sum(mem for _, mem in readings.values())
        return values


class Series:
    """At most ``max_points`` (time, value) points; when full, every other point is dropped."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max(2, max_points)
        self._points: list[tuple[int, float, float]] = []  # (sample number, time, value)
        self._stride = 1
        self._samples = 0
        self.peak = float("-inf")
        self.total = 0.0
        self.last = 0.0

    def add(self, at: float, value: float) -> None:
        if self._samples % self._stride == 0:
            self._points.append((self._samples, at, value))
            if len(self._points) > self.max_points:
                self._stride *= 2
                self._points = [p for p in self._points if p[0] % self._stride == 0]
        self._samples += 1
        self.peak = max(self.peak, value)
        self.total += value
        self.last = value

    @property
    def samples(self) -> int:
        return self._samples

    def points(self) -> list[tuple[float, float]]:
        return [(at, value) for _, at, value in self._points]

    def summary(self) -> dict[str, float]:
        return {
            "peak": self.peak,
            "mean": self.total / self._samples,
            "last": self.last,
            "samples": self._samples,
        }


class Monitor:
    """Samples its samplers every ``interval`` seconds on a daemon thread."""

    def __init__(
        self,
        samplers: Iterable[Sampler],
        *,
        interval: float = 5.0,
        max_points: int = 720,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._samplers = list(samplers)
        self.interval = interval
        self._max_points = max_points
        self._warn = warn or (lambda message: None)
        self._clock = clock
        self._series: dict[str, Series] = {}
        self._off: dict[str, str] = {}  # sampler name -> why it was switched off
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = clock()

    def sample_once(self) -> dict[str, float]:
        """Take one sample from every sampler still on; returns what was read."""
        at = self._clock()
        values: dict[str, float] = {}
        for sampler in self._samplers:
            if sampler.name in self._off:
                continue
            try:
                values.update(sampler.sample())
            except Exception as exc:  # a broken sampler is switched off, never raised
                self._off[sampler.name] = str(exc)
                _call_quietly(self._warn, f"{sampler.name} monitoring is off for this task: {exc}")
        with self._lock:
            for metric, value in values.items():
                series = self._series.get(metric)
                if series is None:
                    series = self._series[metric] = Series(self._max_points)
                series.add(at - self.started, float(value))
        return values

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval)

    def start(self) -> Monitor:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="overnight-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def latest(self) -> dict[str, float]:
        """The last value of every metric."""
        with self._lock:
            return {metric: s.last for metric, s in self._series.items()}

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric: peak, mean and last value, and the number of samples."""
        with self._lock:
            return {metric: s.summary() for metric, s in sorted(self._series.items())}

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Per metric: (seconds since the monitor was made, value) points, oldest first."""
        with self._lock:
            return {metric: s.points() for metric, s in sorted(self._series.items())}

    def report(self) -> dict[str, Any]:
        """JSON-ready: interval, summary, series (rounded) and samplers switched off."""
        return {
            "interval": self.interval,
            "summary": {
                metric: {k: round(v, 2) for k, v in stats.items()}
                for metric, stats in self.summary().items()
            },
            "series": {
                metric: [[round(at, 1), round(value, 1)] for at, value in points]
                for metric, points in self.series().items()
            },
            "off": dict(self._off),
        }


def describe_resources(report: Mapping[str, Any]) -> list[str]:
    """Readable lines for :meth:`Monitor.report` output (``overnight show``): peak and mean."""
    summary: Mapping[str, Mapping[str, float]] = report.get("summary") or {}
    labels = {"cpu_pct": "CPU", "rss_mb": "RSS", "gpu_mem_mb": "GPU memory (all)"}
    for metric in sorted(summary):
        gpu, _, kind = metric.partition(".")
        if gpu.startswith("gpu") and kind:
            labels[metric] = f"GPU {gpu[3:]} {'utilisation' if kind == 'util_pct' else 'memory'}"
    lines = []
    for metric, label in labels.items():
        stats = summary.get(metric)
        if stats:
            peak, mean = _amount(metric, stats["peak"]), _amount(metric, stats["mean"])
            lines.append(f"{label}: peak {peak}, mean {mean}")
    lines.extend(
        f"{name} monitoring was off: {why}" for name, why in (report.get("off") or {}).items()
    )
    return lines


def _amount(metric: str, value: float) -> str:
    if metric.endswith("_pct"):
        return f"{value:.0f} %"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def _call_quietly(warn: Callable[[str], None], message: str) -> None:
    # A broken log sink must not take monitoring (or the task) down.
    with contextlib.suppress(Exception):
        warn(message)
