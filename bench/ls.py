"""``overnight ls --limit 50`` with 100,000 tasks in Redis (target: under 0.2 s).

Fills Redis with 100,000 tasks (sweeps of 1,000 on two queues, some of them run to the end with
two metrics), then times the listing: the store query alone, the whole ``ls`` command in-process
(connect, reap lost tasks, query, render the table), filtered listings, one sweep's leaderboard
(``ls``/``summary --sweep ID --sort loss``: within 1.5x of ``ls``), ``--sort`` over every task,
and the command in a subprocess (which adds the interpreter's start).

    python bench/ls.py [--tasks 100000] [--runs 10] [--redis-url URL]
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

from click.testing import CliRunner
from redis_server import bench, parser

from overnight.agent.run.monitor import Monitor
from overnight.cli import cli
from overnight.metrics.summary import MetricSummary
from overnight.queue.index import Query
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot


def eight_gpu_report() -> dict[str, object]:
    """The resource report of a long 8-GPU run: 19 metrics, 720 points each (~130 KB)."""

    class Run:
        name = "run"
        tick = 0

        def sample(self) -> dict[str, float]:
            self.tick += 1
            values = {"cpu_pct": self.tick % 100, "rss_mb": 9000.0 + self.tick % 50}
            for gpu in range(8):
                values[f"gpu{gpu}.util_pct"] = (self.tick * 7 + gpu) % 100
                values[f"gpu{gpu}.mem_mb"] = 70000.0 + self.tick % 97
            values["gpu_mem_mb"] = 560000.0
            return values

    moments = iter(range(10**6))
    monitor = Monitor([Run()], max_points=720, clock=lambda: 5.0 * next(moments))
    for _ in range(3000):
        monitor.sample_once()
    return monitor.report()


REPORT = eight_gpu_report()


def fill(store: TaskStore, repo: str, tasks: int) -> list[str]:
    """The tasks, in sweeps of 1,000; returns the sweep ids."""
    snapshot = take_snapshot(Path(repo), ["python", "train.py"], SnapshotOptions())
    batch = 1000
    start = time.perf_counter()
    sweeps = []
    for n in range(0, tasks, batch):
        sweep = Sweep("seed", tuple(str(n + i) for i in range(min(batch, tasks - n))))
        queue = "gpu" if (n // batch) % 2 else "cpu"
        records = submit_sweep(store, snapshot, TaskOptions(queue=queue), [sweep], add_params=True)
        sweeps.append(str(records[0].sweep))
        for i, record in enumerate(records[:20]):  # some of every batch ran to the end, on 8 GPUs
            metrics = {
                "loss": MetricSummary.first(2.0, 0).updated(1.0 / (i + 1), 900),
                "acc": MetricSummary.first(0.1, 0).updated(i / 20, 900),
            }
            store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
            store.transition(
                record.id,
                TaskStatus.FINISHED,
                Change(exit_code=0, extra={"resources": REPORT}, metrics=metrics),
            )
    print(f"filled {tasks} tasks in {time.perf_counter() - start:.1f} s")
    return sweeps


def median(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--tasks", type=int, default=100_000)
    options.add_argument("--runs", type=int, default=10)
    args = options.parse_args()
    with bench(args.redis_url) as b:
        url = b.url
        store = TaskStore(b.client)
        sweeps = fill(store, b.repo, args.tasks)
        sweep = sweeps[len(sweeps) // 2]
        runner = CliRunner()

        def run(name: str, *extra: str) -> None:
            with redirect_stdout(io.StringIO()):
                result = runner.invoke(cli, [name, "--redis-url", url, *extra])
            assert result.exit_code == 0, result.output

        def ls(*extra: str) -> None:
            run("ls", *extra)

        board = ("--sweep", sweep, "--sort", "loss", "--metric", "acc")

        finished = frozenset({TaskStatus.FINISHED})
        figures = {
            "store.find(limit=50)": median(lambda: store.find(Query(limit=50)), args.runs),
            "ls --limit 50 (in-process)": median(lambda: ls("--limit", "50"), args.runs),
            "ls -q gpu -s finished --limit 50": median(
                lambda: ls("-q", "gpu", "-s", "finished", "--limit", "50"), args.runs
            ),
            "ls -s running (none running)": median(lambda: ls("-s", "running"), args.runs),
            "store.find(gpu, finished, limit=50)": median(
                lambda: store.find(Query(queue="gpu", statuses=finished, limit=50)), args.runs
            ),
            "ls --sweep ID (1,000 tasks) --limit 50": median(
                lambda: ls("--sweep", sweep, "--limit", "50"), args.runs
            ),
            "ls --sweep ID --sort loss --metric acc -n 50": median(lambda: ls(*board), args.runs),
            "summary --sweep ID --sort loss --metric acc": median(
                lambda: run("summary", *board), args.runs
            ),
            "ls --sweep ID --sort loss --csv -n 0": median(
                lambda: ls(*board, "--csv", "-n", "0"), args.runs
            ),
            "ls --grep '--seed 0' (the oldest task: reads all)": median(
                lambda: ls("--grep=--seed 0", "-n", "1"), max(1, args.runs // 5)
            ),
            "ls --sort -acc -n 50 (every task read)": median(
                lambda: ls("--sort", "-acc", "-n", "50"), max(1, args.runs // 5)
            ),
        }
        checkout = str(Path(__file__).resolve().parents[1])  # this overnight, wherever it runs
        env = {**os.environ, "OVERNIGHT_REDIS_URL": url, "PYTHONPATH": checkout}
        command = [sys.executable, "-m", "overnight", "ls", "--limit", "50"]
        figures["overnight ls --limit 50 (subprocess)"] = median(
            lambda: subprocess.run(command, env=env, capture_output=True, check=True), 5
        )
        figures["python -m overnight --help (interpreter start)"] = median(
            lambda: subprocess.run(
                [sys.executable, "-m", "overnight", "--help"],
                env=env,
                capture_output=True,
                check=True,
            ),
            5,
        )
        print(f"{args.tasks} tasks in Redis; median times:")
        for name, seconds in figures.items():
            print(f"  {name:<48} {seconds * 1000:7.1f} ms")
        print("  target for ls --limit 50: under 200 ms; a sweep's leaderboard within 1.5x of it")


if __name__ == "__main__":
    main()
