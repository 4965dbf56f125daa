"""500 tiny tasks through 2 agents, against the same commands run one after another directly
(target: ratio under 1.5).

The tasks are a sweep of one snapshot (each prints one line, then sleeps ``--work`` seconds,
default 0: the command is only an interpreter start). Both agents (subprocesses, venv mode,
warm venv) serve one queue; the clock runs from the submit to the last final status. The
baseline runs the same commands with the same venv's python, one after another.

    python bench/throughput.py [--tasks 500] [--agents 2] [--work 0] [--redis-url URL]

Everything (repo, mirror, trees, venvs) lives in a temporary folder: ``TMPDIR=/path`` picks the
disk, whose speed at creating and removing files shows in the figure.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from agent_setup import make_project, start_agent, stop, wait_final
from redis_server import redis_url

from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit, submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--work", type=float, default=0.0, help="seconds each task sleeps")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    with redis_url(args.redis_url) as url, tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        client = redis.Redis.from_url(url)
        client.flushdb()
        store = TaskStore(client)
        project = make_project(base)
        argv = ["python", "job.py", "--work", str(args.work), "--i", "0"]
        snapshot = take_snapshot(project, argv, SnapshotOptions())
        options = TaskOptions(queue="bench")
        agents = [
            start_agent(url, base / "agents", f"bench-{n}", "bench") for n in range(args.agents)
        ]
        try:
            warm = submit(store, snapshot, options)  # builds the venv, fills the git mirror
            wait_final(store, [warm.id])
            key = store.get(warm.id).extra["environment"]["key"]
            sweep = [Sweep("i", tuple(str(i) for i in range(1, args.tasks + 1)))]
            start = time.perf_counter()
            records = submit_sweep(store, snapshot, options, sweep)
            wait_final(store, [r.id for r in records])
            through_agents = time.perf_counter() - start
            by_agent: dict[str, int] = {}
            for record in store.get_many([r.id for r in records]):
                by_agent[record.agent or "?"] = by_agent.get(record.agent or "?", 0) + 1
        finally:
            stop(*agents)
        python = base / "agents" / "envs" / "envs" / key / "bin" / "python"
        start = time.perf_counter()
        for i in range(1, args.tasks + 1):
            command = [str(python), *argv[1:-1], str(i)]
            subprocess.run(command, cwd=project, check=True, stdout=subprocess.DEVNULL)
        direct = time.perf_counter() - start

    n = args.tasks
    print(f"each task: {' '.join(argv[:-1])} N (files under {tempfile.gettempdir()})")
    print(f"{n} tasks through {args.agents} agents: {through_agents:.1f} s "
          f"({through_agents / n * 1000:.0f} ms per task; per agent {by_agent})")  # fmt: skip
    print(f"{n} commands run directly, one after another: {direct:.1f} s "
          f"({direct / n * 1000:.0f} ms each)")  # fmt: skip
    print(f"ratio: {through_agents / direct:.2f} (target < 1.5)")


if __name__ == "__main__":
    main()
