"""From ``overnight enqueue`` to the task's first statement on an idle, warm venv agent (target:
under 0.25 s at the median).

A venv agent (a subprocess) serves the queue; a first task builds its environment, so every
measured one finds it warm. Each end-to-end run starts ``overnight enqueue -- python job.py`` as
a subprocess, as a shell would, and reads from the task's log the time its first statement ran;
the bare interpreter's start is measured in the same run, beside it. The phases, medians too:
the command's imports (``python -X importtime`` of a real enqueue: what it imports that ``python
-c pass`` does not), the snapshot (in this process, with its git subprocesses counted), the
submission (connect and submit, in this process) and the agent's pickup (from the end of that
submission to the task's first statement).

    python bench/enqueue.py [--runs 15] [--redis-url URL] [--compare CHECKOUT]

``--compare`` also times, in turn with this checkout's, the end to end of another checkout's
``overnight enqueue`` (a worktree of an older commit, say) against the same agent.

Everything lives in a temporary folder: ``TMPDIR=/path`` picks the disk. The commands keep their
bytecode there (``PYTHONPYCACHEPREFIX``), as an installed overnight has its own, even where
``PYTHONDONTWRITEBYTECODE`` is set: compiling the sources on every run is not what users wait for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from agent_setup import CHECKOUT, make_project, start_agent, stop, wait_final
from redis_server import redis_url

from overnight.config import load_client_config
from overnight.queue import keys
from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.recorder.gitrepo import Git
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

QUEUE = "bench"
JOB = 'import time\nprint("first statement at", repr(time.time()), flush=True)\n'
COMMAND = ["python", "job.py"]  # `python` is this interpreter: its folder leads PATH, as in a venv


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--redis-url", default=None, help="default: a throwaway redis-server")
    parser.add_argument("--compare", type=Path, default=None, metavar="CHECKOUT")
    args = parser.parse_args()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(CHECKOUT),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with redis_url(args.redis_url) as url, tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env.update({"OVERNIGHT_REDIS_URL": url, "OVERNIGHT_CONFIG": str(base / "none.yaml")})
        env["PYTHONPYCACHEPREFIX"] = str(base / "bytecode")
        client = redis.Redis.from_url(url)
        client.flushdb()
        project = make_project(base, JOB)
        agent = start_agent(url, base / "agent", "bench-agent", QUEUE)
        try:
            figures = _measure(args.runs, client, project, env, args.compare)
        finally:
            stop(agent)
            client.close()
    _report(args.runs, figures, args.compare)


def _measure(
    runs: int, client: redis.Redis, project: Path, env: dict[str, str], compare: Path | None
) -> dict[str, list[float]]:
    store = TaskStore(client)
    options = TaskOptions(queue=QUEUE, gpus=0)
    wait_final(store, [store.submit(_snapshot(project, env), options).id])  # builds the venv
    others = [{**env, "PYTHONPATH": str(compare.resolve())}] if compare is not None else []
    for warm_up in (env, *others):  # each checkout's commands compile their bytecode once
        _end_to_end(client, store, project, warm_up)
    figures: dict[str, list[float]] = {name: [] for name in PHASES}
    figures["git subprocesses"] = []
    figures["compared"] = []
    for _ in range(runs):
        figures["interpreter start"].append(_timed([sys.executable, "-c", "pass"], project, env))
        figures["imports"].append(_imports(project, env, client, store))
        with _counting(Git, "run") as calls:
            start = time.perf_counter()
            snapshot = _snapshot(project, env)
            figures["snapshot"].append(time.perf_counter() - start)
        figures["git subprocesses"].append(calls[0])
        start = time.time()
        config = load_client_config(flags={"redis_url": env["OVERNIGHT_REDIS_URL"]}, environ=env)
        task = TaskStore.from_config(config).submit(snapshot, options)
        submitted = time.time()
        figures["submission"].append(submitted - start)
        figures["pickup to first statement"].append(_first_statement(client, task.id) - submitted)
        wait_final(store, [task.id])
        time.sleep(0.2)  # the agent is idle again, blocked on its queue
        end_to_end, exits = _end_to_end(client, store, project, env)
        figures["end to end"].append(end_to_end)
        figures["command exits"].append(exits)
        for other in others:
            figures["compared"].append(_end_to_end(client, store, project, other)[0])
    return figures


def _end_to_end(
    client: redis.Redis, store: TaskStore, project: Path, env: dict[str, str]
) -> tuple[float, float]:
    """From the start of ``overnight enqueue`` to the task's first statement, and to its exit."""
    start = time.time()
    proc = subprocess.run(_enqueue(), cwd=project, env=env, capture_output=True, text=True)
    exits = time.time() - start
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    first = _first_statement(client, task_id) - start
    wait_final(store, [task_id])
    time.sleep(0.2)  # the agent is idle again, blocked on its queue
    return first, exits


PHASES = (
    "interpreter start",
    "imports",
    "snapshot",
    "submission",
    "pickup to first statement",
    "command exits",
    "end to end",
)


def _report(runs: int, figures: dict[str, list[float]], compare: Path | None) -> None:
    med = {name: statistics.median(values) for name, values in figures.items() if values}
    print(f"overnight enqueue -> the task's first statement, median of {runs} runs:")
    print(f"  bare interpreter start (python -c pass)   {med['interpreter start'] * 1000:6.0f} ms")
    print(f"  imports (beyond the bare interpreter's)   {med['imports'] * 1000:6.0f} ms")
    snapshot = f"snapshot ({med['git subprocesses']:.0f} git subprocesses)"
    print(f"  {snapshot:<40}  {med['snapshot'] * 1000:6.0f} ms")
    print(f"  submission (connect, submit)              {med['submission'] * 1000:6.0f} ms")
    print(f"  agent pickup to first statement           {med['pickup to first statement'] * 1000:6.0f} ms")  # fmt: skip
    print(f"  the command, start to exit                {med['command exits'] * 1000:6.0f} ms")
    ends = figures["end to end"]
    print(
        f"end to end: {med['end to end'] * 1000:.0f} ms (min {min(ends) * 1000:.0f}, "
        f"max {max(ends) * 1000:.0f}) beside a bare interpreter start of "
        f"{med['interpreter start'] * 1000:.0f} ms; target: under 250 ms"
    )
    if compare is not None:
        print(f"end to end with {compare}'s enqueue, in turn: {med['compared'] * 1000:.0f} ms")


def _enqueue(*python_options: str) -> list[str]:
    return [sys.executable, *python_options, "-m", "overnight", "enqueue", "-q", QUEUE,
            "--gpus", "0", "--", *COMMAND]  # fmt: skip


def _snapshot(project: Path, env: dict[str, str]) -> Any:
    return take_snapshot(project, COMMAND, SnapshotOptions(), env)


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def _imports(project: Path, env: dict[str, str], client: redis.Redis, store: TaskStore) -> float:
    """What a real enqueue imports beyond a bare interpreter's start, per ``-X importtime``."""
    bare = _import_times([sys.executable, "-X", "importtime", "-c", "pass"], project, env)
    proc = subprocess.run(
        _enqueue("-X", "importtime"), cwd=project, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    wait_final(store, [proc.stdout.strip()])
    time.sleep(0.2)
    times = _parse_import_times(proc.stderr)
    return sum(micros for name, micros in times.items() if name not in bare) / 1e6


def _import_times(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, int]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return _parse_import_times(proc.stderr)


def _parse_import_times(stderr: str) -> dict[str, int]:
    """Top-level imports (not imported by another module) -> cumulative microseconds."""
    top: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):
            top[name.strip()] = int(cumulative)
    return top


@contextmanager
def _counting(owner: type, method: str) -> Iterator[list[int]]:
    """Count the calls of ``owner.method`` inside the block."""
    calls = [0]
    original: Callable[..., Any] = getattr(owner, method)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(owner, method, counted)
    try:
        yield calls
    finally:
        setattr(owner, method, original)


def _first_statement(client: redis.Redis, task_id: str, timeout: float = 60) -> float:
    """The unix time the task's first statement printed, read from its log."""
    key, last = keys.log(task_id), "0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _stream, entries in client.xread({key: last}, block=1000) or []:
            for entry_id, fields in entries:
                last = entry_id
                line = fields.get(b"line", b"").decode()
                if line.startswith("first statement at "):
                    return float(line.rsplit(" ", 1)[1])
    raise SystemExit(f"task {task_id} printed no first statement within {timeout} s")


if __name__ == "__main__":
    main()
