"""Remake the README's pictures of ``overnight ui`` from a demo queue.

Starts a throwaway redis-server (bench/redis_server.py), fills it with a small lab's weekend
(a learning-rate sweep that finished, one run that ran out of memory, a variant with changed
code, one still running with a coloured log, one queued, an agent with two GPUs), serves the
page in-process on a free port and photographs the runs, run and compare pages with Debian's
chromium (Playwright, ``executable_path=/usr/bin/chromium``) into docs/screenshots/.

    python examples/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import uvicorn  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from redis_server import bench  # noqa: E402

from overnight.metrics.summary import MetricSummary  # noqa: E402
from overnight.queue import keys  # noqa: E402
from overnight.queue.agents import AgentInfo, AgentRegistry  # noqa: E402
from overnight.queue.records import Change, TaskOptions, TaskStatus  # noqa: E402
from overnight.queue.store import TaskStore  # noqa: E402
from overnight.queue.submit import (  # noqa: E402
    Submission,
    submit_many,
    submit_sweep,
)
from overnight.queue.sweeps import Sweep  # noqa: E402
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot  # noqa: E402
from overnight.ui.app import UiSettings, create_app  # noqa: E402
from overnight.ui.security import Access  # noqa: E402

AGENT = "gpu-box-1"


def run(store: TaskStore, task_id: str, final: float | None, lr: float, *, fail: str = "") -> None:
    """Play a run as an agent would: running on GPU 0, metrics, resources and a log."""
    store.transition(task_id, TaskStatus.RUNNING, Change(agent=AGENT, gpu_ids=("0",)))
    steps = range(0, 1001, 50)
    end = 1.2 if final is None else final
    losses = [end + (2.3 - end) * math.exp(-s * lr / 60) for s in steps]
    series = {"loss": [[s / 10, s, v] for s, v in zip(steps, losses, strict=True)]}
    summary = MetricSummary.first(losses[0], 0)
    for s, v in zip(steps, losses, strict=True):
        summary = summary.updated(v, s)
    store.update_metrics(
        task_id, {"loss": summary}, series, expect={TaskStatus.RUNNING}, agent=AGENT
    )
    seconds = range(0, 600, 10)
    store.redis.set(
        keys.series(task_id),
        json.dumps(
            {
                "gpu0.util_pct": [[t, 85 + 10 * math.sin(t / 40)] for t in seconds],
                "gpu0.mem_mb": [[t, 30000 + 20 * t] for t in seconds],
                "cpu_pct": [[t, 140 + 30 * math.cos(t / 25)] for t in seconds],
                "rss_mb": [[t, 5200 + 2 * t] for t in seconds],
            }
        ),
    )
    now = time.time()
    lines = [(now, "\x1b[1mEpoch 1/20\x1b[0m"), (now, "loading CIFAR-10: 50000 images")]
    lines += [
        (now, f"step {s:4d}  loss \x1b[32m{v:.4f}\x1b[0m")
        for s, v in zip(steps, losses, strict=True)
    ]
    if fail:
        lines.append((now, f"\x1b[31m{fail}\x1b[0m"))
    store.logs.append(task_id, lines)
    if final is None:
        return
    status = TaskStatus.FAILED if fail else TaskStatus.FINISHED
    store.transition(task_id, status, Change(exit_code=1 if fail else 0, error=fail or None))


def fill(store: TaskStore, repo: Path) -> dict[str, str]:
    argv = ["python", "train.py", "--lr", "0.1", "--epochs", "20"]
    base = take_snapshot(repo, argv, SnapshotOptions(note="resnet18 baseline", tags=("resnet",)))
    sweep = submit_sweep(
        store, base, TaskOptions(queue="gpu", gpus=1),
        [Sweep("lr", ("0.3", "0.1", "0.03", "0.01"))], add_params=True,
    )  # fmt: skip
    for record, final in zip(sweep, (0.41, 0.18, 0.09, 0.22), strict=True):
        run(store, record.id, final, float(record.params["lr"]))
    (repo / "train.py").write_text(
        "import sys\nprint(sys.argv)\n# uncommitted change\nWARMUP = 500  # steps of linear warmup\n"
    )
    variant = take_snapshot(
        repo, [*argv[:3], "0.03", *argv[4:], "--warmup", "500"],
        SnapshotOptions(note="warmup before the decay", tags=("resnet", "warmup")),
    )  # fmt: skip
    oom, warm, live, queued = submit_many(
        store,
        [
            Submission(base, TaskOptions(queue="gpu", gpus=1), argv=(*argv[:3], "1.0", *argv[4:])),
            Submission(variant, TaskOptions(queue="gpu", gpus=1)),
            Submission(variant, TaskOptions(queue="gpu", gpus=1), name="warmup, longer"),
            Submission(base, TaskOptions(queue="gpu", gpus=1), name="next up"),
        ],
    )
    run(
        store, oom.id, 0.0, 1.0, fail="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    run(store, warm.id, 0.07, 0.03)
    run(store, live.id, None, 0.03)
    AgentRegistry(store.redis).register(
        AgentInfo(
            name=AGENT,
            host="gpu-box-1.lab",
            queues=("gpu",),
            gpus=("0", "1"),
            state="busy",
            tasks=(live.id,),
            heartbeat=time.time(),
            started=time.time() - 7200,
            extra={
                "slots": {
                    "gpus": {
                        "0": {"task": live.id},
                        "1": {"unavailable": "in use by pid 4242 (not overnight's)"},
                    }
                },
                "usage": {live.id: {"gpu0.util_pct": 91.0, "gpu0.mem_mb": 31200.0}},
                "windows": {"state": "open until mon 07:00"},
            },
        )
    )
    return {"base": sweep[2].id, "variant": warm.id, "live": live.id, "queued": queued.id}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = options.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with bench(None) as b:
        store = TaskStore(b.client)
        ids = fill(store, Path(b.repo))
        settings = UiSettings(store=store, access=Access("127.0.0.1"), local_repo=Path(b.repo))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        shots = {
            "runs.png": "/runs?metric=loss&metric=loss:min",
            "run.png": f"/runs/{ids['live']}",
            "compare.png": f"/compare?id={ids['base']}&id={ids['variant']}",
        }
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for name, path in shots.items():
                    page.goto(url + path)
                    page.wait_for_timeout(800)  # charts drawn, the log scrolled
                    page.screenshot(path=str(args.out / name), full_page=name == "run.png")
                    print(f"wrote {args.out / name}")
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)


if __name__ == "__main__":
    main()
