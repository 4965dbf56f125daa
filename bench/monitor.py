"""Sampling overhead of the resource monitor on a busy task (target: under 1 % of one core).

Starts a task-like process tree (busy children plus idle workers, as a training run with data
loader workers has), monitors it the way the agent does, and prints the CPU time the monitor
spent per second of wall time. This process does nothing else while it waits, so its own CPU time
is the monitor's. Real GPUs are sampled when NVML answers; otherwise a fake inventory stands in
(and the GPU part costs next to nothing). With ``--docker`` (and an engine answering) it also
measures a busy container sampled through ``docker stats``, and the ``docker top`` call that
tells the allocator which GPU processes are the task's own.

    python bench/monitor.py [--seconds 20] [--interval 1 --interval 5] [--busy 2 --idle 8] [--docker]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil

from overnight.agent.environments.docker.stats import DockerStatsSampler, container_pids
from overnight.agent.gpus.inventory import FakeInventory, GPUInventory, open_inventory
from overnight.agent.run.monitor import GPUProbe, GPUSampler, Monitor, ProcessTreeSampler, Sampler

BASE_IMAGE = "overnight-base:bookworm"

TREE = """
import subprocess, sys
busy, idle = int(sys.argv[1]), int(sys.argv[2])
kids = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
kids += [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e6)"]) for _ in range(idle)]
print("ready", flush=True)
sys.stdin.read()
for k in kids:
    k.kill()
"""


def measure(pid: int, inventory: GPUInventory, interval: float, seconds: float) -> None:
    gpu_ids = tuple(d.id for d in inventory.devices())
    probe = GPUProbe(inventory, warn=lambda message: print(f"warning: {message}"))
    sample(
        f"{len(gpu_ids)} GPUs",
        [ProcessTreeSampler(pid), GPUSampler(probe, gpu_ids)],
        interval,
        seconds,
    )


def sample(what: str, samplers: list[Sampler], interval: float, seconds: float) -> None:
    monitor = Monitor(samplers, interval=interval)
    me = psutil.Process()
    before = me.cpu_times()
    start = time.monotonic()
    with monitor:
        time.sleep(seconds)
    wall = time.monotonic() - start
    after = me.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    summary = monitor.summary()
    samples = int(summary["rss_mb"]["samples"])
    tree = (
        f"{int(summary['processes']['last'])} processes" if "processes" in summary else "container"
    )
    print(
        f"interval {interval:g} s, {tree}, {what}, {samples} samples "
        f"in {wall:.1f} s: monitor CPU {1000 * cpu / wall:.2f} ms per s of wall time "
        f"= {100 * cpu / wall:.3f} % of one core ({1000 * cpu / max(samples, 1):.2f} ms a sample); "
        f"task tree used {summary.get('cpu_pct', {}).get('mean', 0):.0f} % CPU"
    )


def measure_docker(busy: int, intervals: list[float], seconds: float) -> None:
    import docker

    client = docker.from_env()
    script = TREE + "\n"  # the same tree, inside a container
    container = client.containers.run(
        BASE_IMAGE,
        ["python3", "-c", script, str(busy), "2"],
        detach=True,
        stdin_open=True,
        labels={"overnight.bench": "monitor"},
    )
    try:
        time.sleep(2)
        for interval in intervals:
            stats = DockerStatsSampler(lambda: container.stats(stream=False))
            sample("docker stats", [stats], interval, seconds)
        start, me, calls = time.monotonic(), psutil.Process(), 20
        before = me.cpu_times()
        pids = [len(container_pids(container)) for _ in range(calls)]
        after = me.cpu_times()
        wall = (time.monotonic() - start) / calls
        cpu = ((after.user - before.user) + (after.system - before.system)) / calls
        print(
            f"docker top ({pids[-1]} processes): {1000 * wall:.1f} ms wall, "
            f"{1000 * cpu:.2f} ms CPU a call"
        )
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, action="append")
    parser.add_argument("--busy", type=int, default=2)
    parser.add_argument("--idle", type=int, default=8)
    parser.add_argument("--docker", action="store_true", help="Also a busy container.")
    args = parser.parse_args()
    inventory = open_inventory()
    if isinstance(inventory, FakeInventory):
        print(f"no usable NVML ({inventory.unavailable_reason}); sampling 8 fake GPUs")
        inventory = FakeInventory.with_gpus(8)
    tree = subprocess.Popen(
        [sys.executable, "-c", TREE, str(args.busy), str(args.idle)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert tree.stdout is not None
        tree.stdout.readline()
        for interval in args.interval or [1.0, 5.0]:
            measure(tree.pid, inventory, interval, args.seconds)
    finally:
        assert tree.stdin is not None
        tree.stdin.close()
        tree.wait()
        inventory.close()
    if args.docker:
        measure_docker(args.busy, args.interval or [1.0, 5.0], args.seconds)


if __name__ == "__main__":
    main()
