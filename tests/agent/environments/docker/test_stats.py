"""A container's CPU, memory and host pids, as the monitor and the allocator read them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from overnight.agent.environments.docker.process import DockerProcess
from overnight.agent.environments.docker.stats import DockerStatsSampler, container_pids


def test_docker_stats_cgroup_v2_with_precpu() -> None:
    stats = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000_000},
            "system_cpu_usage": 110_000_000_000,
            "online_cpus": 4,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 1_000_000_000},
            "system_cpu_usage": 100_000_000_000,
        },
        "memory_stats": {"usage": 300 * 1024 * 1024, "stats": {"inactive_file": 100 * 1024 * 1024}},
    }
    values = DockerStatsSampler(lambda: stats).sample()
    # 2 s of CPU over 10 s of system time on 4 cores: 0.8 of one core
    assert values == {"rss_mb": 200.0, "cpu_pct": pytest.approx(80.0)}


def test_docker_stats_one_shot_rates_against_the_previous_sample() -> None:
    samples: Iterator[Mapping[str, Any]] = iter(
        [
            {
                "cpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 1e9},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}},
                "memory_stats": {"usage": 50 * 1024 * 1024, "stats": {"total_inactive_file": 0}},
            },
            {
                "cpu_stats": {
                    "cpu_usage": {"total_usage": 1e9},
                    "system_cpu_usage": 3e9,
                    "online_cpus": 2,
                },
                "memory_stats": {},
            },
        ]
    )
    sampler = DockerStatsSampler(lambda: next(samples))
    assert sampler.sample() == {"rss_mb": 50.0}
    assert sampler.sample() == {"cpu_pct": pytest.approx(100.0)}


@pytest.mark.docker
def test_docker_stats_of_a_real_container(docker_engine: Any) -> None:
    container = docker_engine.containers.run(
        "overnight-base:bookworm",
        ["python3", "-c", "x = bytearray(80 * 1024 * 1024)\nwhile True: x[0] = 1"],
        detach=True,
        labels={"overnight.test": "monitor"},
    )
    try:
        sampler = DockerStatsSampler(lambda: container.stats(stream=False))
        values = sampler.sample()
        assert values["rss_mb"] > 60
        assert values["cpu_pct"] > 0
        # The container's processes as the host numbers them (NVML reports host pids).
        container.reload()
        assert int(container.attrs["State"]["Pid"]) in container_pids(container)
        process = DockerProcess(container)
        assert process.pids() == container_pids(container)
        (docker,) = process.samplers()
        assert isinstance(docker, DockerStatsSampler) and docker.sample()["rss_mb"] > 60
    finally:
        container.remove(force=True)
    assert container_pids(container) == set()  # gone: nothing to count as the task's
