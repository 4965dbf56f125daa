"""A container's resource use: its CPU and memory (``docker stats``) and its host pids
(``docker top``), what the monitor samples and the allocator counts as the agent's own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_MB = 1024 * 1024


class DockerStatsSampler:
    """CPU percent and memory of a container, from a ``container.stats(stream=False)`` callable."""

    name = "docker"

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats
        self._previous: tuple[float, float] | None = None  # (container ns, system ns)

    def sample(self) -> Mapping[str, float]:
        stats = self._stats()
        values: dict[str, float] = {}
        memory = stats.get("memory_stats") or {}
        if "usage" in memory:
            inner = memory.get("stats") or {}
            cache = inner.get("inactive_file", inner.get("total_inactive_file", 0))
            values["rss_mb"] = max(0, memory["usage"] - cache) / _MB
        cpu = _cpu_counters(stats.get("cpu_stats"))
        before = _cpu_counters(stats.get("precpu_stats")) or self._previous
        if cpu is not None:
            self._previous = cpu
        if cpu is not None and before is not None and cpu[1] > before[1]:
            cores = (stats.get("cpu_stats") or {}).get("online_cpus") or 1
            values["cpu_pct"] = 100.0 * cores * (cpu[0] - before[0]) / (cpu[1] - before[1])
        return values


def _cpu_counters(block: Mapping[str, Any] | None) -> tuple[float, float] | None:
    if not block or not block.get("system_cpu_usage"):
        return None
    return float(block["cpu_usage"]["total_usage"]), float(block["system_cpu_usage"])


def container_pids(container: Any) -> set[int]:
    """Host pids of every process in a running container (``docker top``); empty once it stopped."""
    try:
        top = container.top()
    except Exception:  # stopped, removed, engine away: no processes to count as the task's
        return set()
    titles = list(top.get("Titles") or [])
    if "PID" not in titles:
        return set()
    column = titles.index("PID")
    return {int(row[column]) for row in top.get("Processes") or [] if str(row[column]).isdigit()}
