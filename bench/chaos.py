"""A soak under faults: N tasks, K agents SIGKILLed and restarted at random, one Redis restart
and, with ``--sentinel``, one failover; prints what the queue kept and what it lost.

Each task appends to a ledger (its id, attempt, pid and the time, at its start, at each line it
prints and at its end) and prints numbered lines. From the ledger and the records:

- finished: tasks whose record ends ``finished``; lost: every other ending, or none by the bound;
- duplicated: tasks two of whose attempts ran at the same time (overlapping ledger spans);
- extra attempts: attempts (distinct pids in the ledger) beyond one per task;
- log lines missing: lines the final attempt printed that its stored log lacks.

    python bench/chaos.py [--quick] [--sentinel] [--tasks N] [--agents K] [--bound SECONDS]

Bounded to ``--bound`` seconds (600; ``--quick``: 180, fewer and shorter tasks). Needs
redis-server (and redis-sentinel for ``--sentinel``); everything lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent_setup import make_project, start_agent

from overnight.queue.connection import acks_for, connect
from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

JOB = """\
import os, sys, time
ledger, lines, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
task, attempt, pid = os.environ["OVERNIGHT_TASK_ID"], os.environ["OVERNIGHT_ATTEMPT"], os.getpid()
def note(event):
    with open(ledger, "a") as out:
        out.write(f"{task} {attempt} {pid} {time.time():.3f} {event}\\n")
note("start")
for n in range(lines):
    print(f"a{attempt} line {n}", flush=True)
    note("line")
    time.sleep(pause)
note("end")
"""
T = TypeVar("T")
AGENT_ENV = {  # faults noticed within seconds; a failover (about 3 s) well inside lost_ttl
    "OVERNIGHT_HEARTBEAT_INTERVAL": "1",
    "OVERNIGHT_LOST_TTL": "10",
    "OVERNIGHT_REAP_INTERVAL": "2",
    "OVERNIGHT_MAX_BACKOFF": "1",
    "OVERNIGHT_CPU_SLOTS": "2",
}


@dataclasses.dataclass
class Plan:
    tasks: int
    agents: int
    bound: float
    lines: int
    pause: float
    kill_every: tuple[float, float]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter tasks; 180 s bound")
    parser.add_argument("--sentinel", action="store_true", help="Redis behind Sentinel")
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--agents", type=int)
    parser.add_argument("--bound", type=float)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plan = (
        Plan(tasks=20, agents=3, bound=180, lines=30, pause=0.15, kill_every=(4, 8))
        if args.quick
        else Plan(tasks=60, agents=4, bound=600, lines=60, pause=0.2, kill_every=(6, 15))
    )
    plan.tasks, plan.agents = args.tasks or plan.tasks, args.agents or plan.agents
    plan.bound = args.bound or plan.bound
    random.seed(args.seed)
    for binary in ("redis-server", *(("redis-sentinel",) if args.sentinel else ())):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is not installed (apt-get install {binary})")
    with tempfile.TemporaryDirectory(prefix="overnight-chaos-") as tmp:
        run(plan, Path(tmp), sentinel=args.sentinel)


def run(plan: Plan, base: Path, *, sentinel: bool) -> None:
    redis = SentinelRedis(base / "redis") if sentinel else PlainRedis(base / "redis")
    try:
        soak(plan, base, redis)
    finally:
        redis.stop()


def soak(plan: Plan, base: Path, redis: PlainRedis | SentinelRedis) -> None:
    store = TaskStore(connect(redis.url), acks=acks_for(redis.url))
    ledger = base / "ledger"
    project = make_project(base, JOB)
    argv = ["python", "job.py", str(ledger), str(plan.lines), str(plan.pause)]
    snapshot = take_snapshot(project, argv, SnapshotOptions())
    options = TaskOptions(queue="chaos", retries=5)
    records = submit_many(store, [Submission(snapshot, options) for _ in range(plan.tasks)])
    ids = [r.id for r in records]
    agents = {f"chaos-{n}": launch(redis.url, base, f"chaos-{n}") for n in range(plan.agents)}
    restart_at: dict[str, float] = {}
    started = time.monotonic()
    events: collections.Counter[str] = collections.Counter()
    # The faults fall inside the sweep: its work spread over the agents' slots, after the
    # first seconds (venvs being built).
    work = (
        plan.tasks * plan.lines * plan.pause / (plan.agents * int(AGENT_ENV["OVERNIGHT_CPU_SLOTS"]))
    )
    faults = [(8 + 0.4 * work, "Redis restart")]
    if isinstance(redis, SentinelRedis):
        faults = [(8 + 0.3 * work, "failover"), (8 + 0.6 * work, "Redis restart")]
    next_kill = started + random.uniform(*plan.kill_every)
    try:
        while time.monotonic() - started < plan.bound:
            if all_final(store, ids):
                break
            now = time.monotonic()
            for name, agent in agents.items():  # a killed agent comes back after a moment
                if agent.poll() is not None and now >= restart_at.get(name, 0):
                    agents[name] = launch(redis.url, base, name)
            if faults and now - started >= faults[0][0]:
                what = faults.pop(0)[1]
                events[what] += 1
                done = sum(r.status.is_final for r in retry(lambda: store.get_many(ids)))
                print(f"{now - started:5.0f} s  {what}, {done}/{len(ids)} tasks ended", flush=True)
                redis.fault()
            if now >= next_kill and now - started < 8 + work:
                name = random.choice(sorted(agents))
                if agents[name].poll() is None:
                    agents[name].send_signal(signal.SIGKILL)
                    agents[name].wait()
                    restart_at[name] = now + random.uniform(1, 3)
                    events["agent kills"] += 1
                    print(f"{now - started:5.0f} s  SIGKILL {name}", flush=True)
                next_kill = now + random.uniform(*plan.kill_every)
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        report(plan, store, ids, ledger, events, elapsed, redis)
    finally:
        for agent in agents.values():
            if agent.poll() is None:
                agent.send_signal(signal.SIGKILL)
                agent.wait()
        store.redis.close()


def launch(url: str, base: Path, name: str) -> subprocess.Popen[bytes]:
    return start_agent(url, base / name, name, "chaos", env=AGENT_ENV, log=base / f"{name}.log")


def all_final(store: TaskStore, ids: list[str]) -> bool:
    try:
        return all(r.status.is_final for r in store.get_many(ids))
    except Exception:  # Redis away for the moment: not final yet
        return False


def report(
    plan: Plan,
    store: TaskStore,
    ids: list[str],
    ledger: Path,
    events: collections.Counter[str],
    elapsed: float,
    redis: PlainRedis | SentinelRedis,
) -> None:
    records = {r.id: r for r in retry(lambda: store.get_many(ids))}
    spans: dict[str, dict[tuple[str, str], list[float]]] = collections.defaultdict(dict)
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        task, attempt, pid, at, _event = line.split()
        span = spans[task].setdefault((attempt, pid), [float(at), float(at)])
        span[0], span[1] = min(span[0], float(at)), max(span[1], float(at))
    finished = [t for t in ids if records[t].status is TaskStatus.FINISHED]
    duplicated = sum(1 for t in ids if overlapping(list(spans[t].values())))
    extra = sum(max(0, len(spans[t]) - 1) for t in ids)
    missing = 0
    for task in finished:
        attempt = records[task].attempt
        stored = {e.line for e in retry(lambda task=task: store.logs.read(task))}
        missing += sum(f"a{attempt} line {n}" not in stored for n in range(plan.lines))
    kind = "Sentinel (master, replica, 3 sentinels)" if isinstance(redis, SentinelRedis) else "one"
    print(f"chaos: {plan.tasks} tasks, {plan.agents} agents, Redis: {kind}, {elapsed:.0f} s")
    print("faults: " + ", ".join(f"{n} {what}" for what, n in sorted(events.items())))
    print(f"tasks finished      {len(finished)}/{plan.tasks}")
    print(f"tasks lost          {plan.tasks - len(finished)}")
    print(f"duplicated          {duplicated} (tasks with overlapping attempts)")
    print(f"extra attempts      {extra}")
    print(f"log lines missing   {missing} of {len(finished) * plan.lines}")


def overlapping(spans: list[list[float]]) -> bool:
    """Whether any two spans ([first, last] ledger times of an attempt) overlap."""
    ends_by = float("-inf")
    for first, last in sorted(spans):
        if first < ends_by:
            return True
        ends_by = max(ends_by, last)
    return False


def retry(call: Callable[[], T], tries: int = 50) -> T:
    """``call()``, again while Redis is away (as after the faults)."""
    for _ in range(tries):
        try:
            return call()
        except Exception:
            time.sleep(0.5)
    return call()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PlainRedis:
    """One redis-server keeping every write on disk (appendfsync always), SIGKILLed once and
    started again on its port and folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return proc
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def fault(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        time.sleep(2)
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class SentinelRedis:
    """The tests' deployment (tests/fixtures/sentinel.py): the first fault kills the master
    (a failover), the second restarts the killed server, which comes back as a replica."""

    def __init__(self, folder: Path) -> None:
        from tests.fixtures.sentinel import start_deployment  # agent_setup put it on the path

        self.deployment = start_deployment(folder)
        self.url = self.deployment.url
        self.killed: int | None = None

    def fault(self) -> None:
        if self.killed is None:
            self.killed = self.deployment.kill_master().port
            self.deployment.wait_for_failover(self.killed)
            return
        node = next(n for n in self.deployment.servers if n.port == self.killed)
        folder = self.deployment.workdir / f"restarted-{node.port}"
        folder.mkdir()
        args = ["redis-server", "--port", str(node.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(folder), "--save", "", "--appendonly", "no"]
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.deployment.stop()


if __name__ == "__main__":
    main()
