"""``overnight ui``'s runs page at 1,000, 10,000 and 100,000 tasks, beside ``overnight ls``.

Fills Redis as ``bench/ls.py`` does (sweeps of 1,000 on two queues, some run to the end with two
metrics and an 8-GPU resource report), growing it to each size in turn, and times the server's
own work through Starlette's TestClient (routing, the store's reads, rendering; no network):
the runs page, a filtered one, the live-status poll, one sweep's leaderboard page and a finished
run's page, with ``ls --limit 50`` in-process measured in the same run. Target: the runs page
under 200 ms at 100,000 tasks.

    python bench/ui.py [--sizes 1000,10000,100000] [--runs 20] [--redis-url URL]
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from contextlib import redirect_stdout

from click.testing import CliRunner
from ls import fill
from redis_server import bench, parser
from starlette.testclient import TestClient

from overnight.cli import cli
from overnight.queue.index import Query
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.ui.app import UiSettings, create_app
from overnight.ui.security import Access


def percentiles(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """p50 and p95 of ``runs`` timings, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--sizes", default="1000,10000,100000")
    options.add_argument("--runs", type=int, default=20)
    args = options.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with bench(args.redis_url) as b:
        store = TaskStore(b.client)
        app = create_app(UiSettings(store=store, access=Access("127.0.0.1")))
        runner = CliRunner()

        def ls() -> None:
            with redirect_stdout(io.StringIO()):
                result = runner.invoke(cli, ["ls", "--redis-url", b.url, "--limit", "50"])
            assert result.exit_code == 0, result.output

        sweeps: list[str] = []
        have = 0
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:

            def get(path: str) -> Callable[[], None]:
                def fetch() -> None:
                    response = client.get(path)
                    assert response.status_code == 200, (path, response.status_code)

                return fetch

            for size in sizes:
                sweeps += fill(store, b.repo, size - have)
                have = size
                sweep = sweeps[len(sweeps) // 2]
                newest = [r.id for r in store.find(Query(limit=50))]
                done = store.find(Query(statuses=frozenset({TaskStatus.FINISHED}), limit=1))[0]
                poll = "/runs/statuses?" + "&".join(f"id={i}" for i in newest)
                figures = {
                    "GET /runs (50 newest)": percentiles(get("/runs"), args.runs),
                    "GET /runs?queue=gpu&status=finished&metric=loss": percentiles(
                        get("/runs?queue=gpu&status=finished&metric=loss"), args.runs
                    ),
                    "GET /runs/statuses (the list's live poll)": percentiles(get(poll), args.runs),
                    "GET /runs?sweep=ID&sort=loss (1,000 tasks)": percentiles(
                        get(f"/runs?sweep={sweep}&sort=loss&metric=acc"), args.runs
                    ),
                    "GET /sweeps/ID (leaderboard and chart)": percentiles(
                        get(f"/sweeps/{sweep}?metric=loss&param=seed"), args.runs
                    ),
                    "GET /runs/ID (finished, 8-GPU resource charts)": percentiles(
                        get(f"/runs/{done.id}"), args.runs
                    ),
                    "overnight ls --limit 50 (in-process)": percentiles(ls, args.runs),
                }
                print(f"{size} tasks in Redis; p50 / p95:")
                for name, (p50, p95) in figures.items():
                    print(f"  {name:<52} {p50:7.1f} ms {p95:7.1f} ms")
        print("  target: GET /runs under 200 ms at 100,000 tasks")


if __name__ == "__main__":
    main()
