"""Start-up time of the ``overnight`` command: ``--help``, ``ls`` and ``snapshot --json``.

Each command runs as a subprocess, as a user's shell runs it, ``--runs`` times; prints the median
and the fastest run next to the bare interpreter's start, then what ``--help`` imports (from
``python -X importtime``) and which heavy modules it loads. ``ls`` talks to a throwaway
redis-server holding a few tasks; ``snapshot`` records a small repo with an uncommitted change.

    python bench/cli_startup.py [--runs 20] [--redis-url URL]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from redis_server import bench, parser

from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("docker", "rq", "redis", "rich", "pynvml", "psutil", "git", "yaml", "overnight.agent")
LOADED = (
    "import sys\n"
    "from overnight.cli import cli\n"
    "try:\n"
    "    cli(['--help'], prog_name='overnight')\n"
    "except SystemExit:\n"
    "    pass\n"
    "heavy = [m for m in {heavy!r} if m in sys.modules]\n"
    "print('heavy modules loaded by --help:', ', '.join(heavy) or 'none', file=sys.stderr)\n"
)


def timed(argv: Sequence[str], runs: int, cwd: str | None, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def import_report(env: dict[str, str]) -> None:
    """The cumulative import time of the biggest top-level imports of ``overnight --help``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "overnight", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    top: list[tuple[int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # imported from __main__, not by another module
            top.append((int(cumulative), name.strip()))
    top.sort(reverse=True)
    print("\npython -X importtime -m overnight --help (top-level imports, cumulative):")
    for micros, name in top[:8]:
        print(f"  {micros / 1000:7.1f} ms  {name}")
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED.format(heavy=HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    print(loaded.stderr.strip())


def main() -> None:
    args_parser = parser(__doc__ or "")
    args_parser.add_argument("--runs", type=int, default=20)
    args = args_parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py = [sys.executable]
    with bench(args.redis_url) as b:
        store = TaskStore(b.client)
        snap = take_snapshot(Path(b.repo), ["python", "train.py"], SnapshotOptions())
        sweep = Sweep("seed", tuple(str(i) for i in range(20)))
        submit_sweep(store, snap, TaskOptions(queue="bench"), [sweep], add_params=True)
        cases: list[tuple[str, list[str], str | None]] = [
            ("python -c pass (interpreter alone)", [*py, "-c", "pass"], None),
            ("python -c 'import click'", [*py, "-c", "import click"], None),
            ("python -c 'import overnight'", [*py, "-c", "import overnight"], None),
            ("overnight --help", [*py, "-m", "overnight", "--help"], None),
            ("overnight ls (20 tasks)", [*py, "-m", "overnight", "ls", "--redis-url", b.url], None),
            (
                "overnight snapshot --json",
                [*py, "-m", "overnight", "snapshot", "--json", "--", "python", "train.py"],
                b.repo,
            ),
        ]
        print(f"{args.runs} runs each, as subprocesses (median / fastest):")
        for label, argv, cwd in cases:
            times = timed(argv, args.runs, cwd, env)
            median, best = statistics.median(times) * 1000, min(times) * 1000
            print(f"  {label:<40} {median:7.1f} ms  {best:7.1f} ms")
    import_report(env)


if __name__ == "__main__":
    main()
