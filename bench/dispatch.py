"""Enqueue to first output of a warm task, against the same command run directly (target:
overhead under 0.3 s at the median).

An idle agent (a subprocess, venv mode) serves the queue; its venv is warm (built by a first
task). Each run submits the task and blocks on its log until the command's first line is
readable in Redis. The baseline starts ``job.py`` with the same venv's python and reads its
first line from a pipe. A warm-versus-cold line shows the second task installs nothing.

    python bench/dispatch.py [--runs 15] [--redis-url URL]   (default: a throwaway redis-server)

Everything lives in a temporary folder: ``TMPDIR=/path`` picks the disk.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from agent_setup import first_line_after, make_project, start_agent, stop, wait_final
from redis_server import redis_url

from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    with redis_url(args.redis_url) as url, tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        client = redis.Redis.from_url(url)
        client.flushdb()
        store = TaskStore(client)
        project = make_project(base)
        snapshot = take_snapshot(project, ["python", "job.py"], SnapshotOptions())
        options = TaskOptions(queue="bench")
        agent = start_agent(url, base / "agent", "bench-agent", "bench")
        try:
            cold = submit(store, snapshot, options)
            wait_final(store, [cold.id])
            warm = submit(store, snapshot, options)
            wait_final(store, [warm.id])
            time.sleep(0.5)  # the agent is idle again, blocked on its queue
            latencies = []
            for _ in range(args.runs):
                start = time.time()
                record = submit(store, snapshot, options)
                latencies.append(first_line_after(client, record.id, "ready") - start)
                wait_final(store, [record.id])
                time.sleep(0.2)
        finally:
            stop(agent)
        envs = [store.get(t).extra["environment"] for t in (cold.id, warm.id)]
        venv_python = base / "agent" / "envs" / "envs" / envs[1]["key"] / "bin" / "python"
        direct = [_direct(venv_python, project) for _ in range(args.runs)]

    med_agent, med_direct = statistics.median(latencies), statistics.median(direct)
    print(f"agent:  enqueue -> first line readable in Redis, median {med_agent * 1000:.0f} ms "
          f"(min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}; {args.runs} runs)")  # fmt: skip
    print(f"direct: start -> first line, same venv's python, median {med_direct * 1000:.0f} ms")
    print(f"overhead at the median: {(med_agent - med_direct) * 1000:.0f} ms (target < 300 ms)")
    print(f"environment: first task built={envs[0]['built']}, second task built={envs[1]['built']} "
          f"(same key {envs[0]['key'] == envs[1]['key']})")  # fmt: skip


def _direct(python: Path, cwd: Path) -> float:
    start = time.time()
    proc = subprocess.Popen([str(python), "job.py"], cwd=cwd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.time() - start
    proc.wait()
    assert line.strip() == b"ready", line
    return elapsed


if __name__ == "__main__":
    main()
