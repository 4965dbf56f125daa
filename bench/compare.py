"""``overnight compare`` of two runs of a 20,000-file repo with 200 changed files (target: 1 s).

The repo of bench/snapshot.py (20,000 tracked files, pushed to a local bare origin); run A is
enqueued with 200 files edited, run B with the same files edited otherwise and an untracked
binary file, so the diff between them has 201 files. Prints the time of ``compare_runs`` and of
the whole ``compare`` command in-process (Redis, both trees rebuilt, the diff, the table), run
in the repo (its commits borrowed: nothing fetched), and once from another folder, where the
origin is fetched into the throwaway repository.

    python bench/compare.py [--files 20000] [--modified 200] [--runs 5] [--redis-url URL]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from redis_server import parser, redis_url
from snapshot import build

from overnight.api import Client
from overnight.cli import cli
from overnight.comparison.report import compare_runs


def timed(runs: int, step: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def shown(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--files", type=int, default=20_000)
    args.add_argument("--modified", type=int, default=200)
    args.add_argument("--runs", type=int, default=5)
    opts = args.parse_args()
    with redis_url(opts.redis_url) as url, tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        work = build(base, opts.files, opts.modified, 0)
        with Client(url) as client:
            client.store.redis.flushdb()
            [a] = client.enqueue("python train.py --lr 0.1", cwd=work)
            for path in work.rglob("module_*.py"):
                text = path.read_text()
                if "edited for the experiment" in text:
                    path.write_text(text.replace("edited for", "edited again for"))
            (work / "weights.bin").write_bytes(os.urandom(4096))
            [b] = client.enqueue("python train.py --lr 0.01", cwd=work)
            store = client.store
            found = compare_runs(store, [a.id, b.id], local_repo=work)
            files = len(found.pairs[0].code.files)
            print(f"two runs of {opts.files} files; their diff has {files} files")
            os.chdir(work)
            core = timed(opts.runs, lambda: compare_runs(store, [a.id, b.id], local_repo=work))
            print(f"compare_runs in the repo: {shown(core)}")
            runner = CliRunner()

            def command_once() -> None:
                done = runner.invoke(cli, ["compare", a.id, b.id], env={"OVERNIGHT_REDIS_URL": url})
                if done.exit_code != 0:
                    raise SystemExit(f"compare failed: {done.output}")

            command = timed(opts.runs, command_once)
            print(f"overnight compare in the repo (in-process): {shown(command)}")
            elsewhere = base / "elsewhere"
            elsewhere.mkdir()
            os.chdir(elsewhere)
            fetched = timed(
                1,
                lambda: compare_runs(store, [a.id, b.id], local_repo=elsewhere, allow_local=True),
            )
            print(f"compare_runs elsewhere (fetches the origin): {fetched[0]:.3f} s")


if __name__ == "__main__":
    main()
