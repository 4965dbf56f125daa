"""Enqueue of a 1,000-task sweep (target: under 2 s).

Times the store side (``submit_sweep`` of 10 x 10 x 10 values sharing one snapshot, in one
transaction) and the whole command (``overnight enqueue --sweep ... --sweep ... --sweep ...``
in a subprocess: interpreter start, snapshot of a small repo, enqueue).

    python bench/sweep.py [--runs 5] [--redis-url URL]   (default: a throwaway redis-server)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from redis_server import bench, parser

from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

CHECKOUT = Path(__file__).resolve().parents[1]  # the subprocess runs this overnight, not another

SWEEPS = [Sweep(name, tuple(str(v) for v in range(10))) for name in ("a", "b", "c")]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--runs", type=int, default=5)
    args = options.parse_args()
    with bench(args.redis_url) as b:
        client, repo, url = b.client, b.repo, b.url
        snapshot = take_snapshot(Path(repo), ["python", "train.py", "--a", "0"], SnapshotOptions())
        store_times, cli_times = [], []
        for _ in range(args.runs):
            client.flushdb()
            store = TaskStore(client)
            start = time.perf_counter()
            records = submit_sweep(
                store, snapshot, TaskOptions(queue="gpu"), SWEEPS, add_params=True
            )
            store_times.append(time.perf_counter() - start)
            assert len(records) == 1000 and store.index.count() == 1000
        for _ in range(args.runs):
            client.flushdb()
            command = [sys.executable, "-m", "overnight", "enqueue", "-q", "gpu"]
            for sweep in SWEEPS:
                command += ["--sweep", f"{sweep.name}=" + ",".join(sweep.values)]
            command += ["--add-param", "--", "python", "train.py"]
            env = {**os.environ, "OVERNIGHT_REDIS_URL": url, "PYTHONPATH": str(CHECKOUT)}
            start = time.perf_counter()
            proc = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
            cli_times.append(time.perf_counter() - start)
            assert proc.returncode == 0, proc.stderr
            assert len(proc.stdout.split()) == 1000
        print("1,000-task sweep (10 x 10 x 10), median of", args.runs, "runs:")
        print(f"  store (submit_sweep, one transaction): {statistics.median(store_times):.3f} s")
        print(f"  whole command (overnight enqueue):     {statistics.median(cli_times):.3f} s")
        print("  target: under 2 s")


if __name__ == "__main__":
    main()
