"""Redis memory per finished task, logs not counted (target: under 4 KB).

Enqueues a sweep of N tasks sharing one snapshot, runs each through preparing, running and
finished as an agent would (agent, GPUs, exit code, a resource summary), then reports
``MEMORY USAGE`` of each task's own keys (record, RQ job), its share of the shared keys
(indexes, RQ registries and queue, spec, blobs, reference counts), and the growth of
``used_memory`` divided by N.

    python bench/memory.py [--tasks 5000] [--redis-url URL]
"""

from __future__ import annotations

import collections
from pathlib import Path

import redis
from redis_server import bench, parser

from overnight.queue import keys
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

RESOURCES = {
    "summary": {"cpu_pct": {"peak": 99.5, "mean": 87.1}, "rss_mb": {"peak": 2048.0, "mean": 1800.2}}
}


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def group(key: str, ids: set[str]) -> str:
    """Which kind of key this is: per task (record, RQ job) or shared."""
    for prefix in (keys.task(""), "rq:job:"):
        if key.startswith(prefix) and key[len(prefix) :] in ids:
            return "task record" if prefix == keys.task("") else "RQ job hash"
    if key.startswith(keys.PREFIX + "idx:"):
        return "overnight indexes (shared)"
    if key.startswith("rq:"):
        return "RQ queues and registries (shared)"
    return "spec, blobs, refs, queues (shared)"


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--tasks", type=int, default=5000)
    args = options.parse_args()
    with bench(args.redis_url) as b:
        client = b.client
        store = TaskStore(client)
        argv = ["python", "train.py", "--lr", "0.001", "--epochs", "20", "--seed", "0"]
        snapshot = take_snapshot(Path(b.repo), argv, SnapshotOptions(note="memory bench"))
        before = used(client)
        sweep = Sweep("seed", tuple(str(i) for i in range(args.tasks)))
        records = submit_sweep(store, snapshot, TaskOptions(queue="gpu", gpus=1), [sweep])
        for record in records:
            store.transition(record.id, TaskStatus.PREPARING, Change(agent="gpu-box-1"))
            store.transition(record.id, TaskStatus.RUNNING, Change(gpu_ids=("0",)))
            store.transition(
                record.id, TaskStatus.FINISHED, Change(exit_code=0, extra={"resources": RESOURCES})
            )
        growth = (used(client) - before) / args.tasks
        ids = {r.id for r in records}
        sizes: collections.Counter[str] = collections.Counter()
        for raw in client.scan_iter(count=1000):
            key = raw.decode()
            sizes[group(key, ids)] += int(client.memory_usage(key, samples=0) or 0)
        print(f"{args.tasks} finished tasks (one sweep), bytes per task:")
        for name, total in sorted(sizes.items()):
            print(f"  {name:<38} {total / args.tasks:8.0f}")
        print(f"  {'sum of MEMORY USAGE':<38} {sum(sizes.values()) / args.tasks:8.0f}")
        print(f"  {'growth of used_memory':<38} {growth:8.0f}")
        print("  target: under 4096")


if __name__ == "__main__":
    main()
