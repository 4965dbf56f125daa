"""What the agent benches share: a project repo with an origin, agents in subprocesses, logs.

Imported before ``overnight`` by each agent bench, it puts this checkout first on the path, and
its agents run this checkout too: never another copy of overnight installed on the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import redis

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))

from overnight.queue import keys  # noqa: E402  (this checkout's, per the line above)
from overnight.queue.records import TaskStatus  # noqa: E402
from overnight.queue.store import TaskStore  # noqa: E402

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
JOB = """\
import sys, time
print("ready", flush=True)
if "--work" in sys.argv:  # seconds of (sleeping) work, like a task waiting on its GPU
    time.sleep(float(sys.argv[sys.argv.index("--work") + 1]))
"""


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True)


def make_project(base: Path, job: str = JOB) -> Path:
    """A pushed repo holding ``job.py`` (``job``: by default, prints one line) and an empty
    requirements.txt."""
    origin, work = base / "origin.git", base / "project"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin))
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "job.py").write_text(job)
    (work / "requirements.txt").write_text("")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "bench job")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "-u", "origin", "main")
    (work / "job.py").write_text(job + "# an uncommitted change\n")
    return work


def start_agent(
    url: str,
    base: Path,
    name: str,
    queue: str,
    *args: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``overnight agent daemon`` in a subprocess, with its dirs under ``base``; ``env`` adds
    settings (``OVERNIGHT_*``), ``log`` keeps its stderr (appended)."""
    variables = {
        **os.environ,
        "PYTHONPATH": str(CHECKOUT),
        "OVERNIGHT_REDIS_URL": url,
        "OVERNIGHT_WORKSPACE_DIR": str(base / "workspaces"),
        "OVERNIGHT_CACHE_DIR": str(base / "envs"),
        "OVERNIGHT_SPILL_DIR": str(base / "spill"),
        "OVERNIGHT_CONFIG": str(base / "none.yaml"),
        "OVERNIGHT_ALLOW_LOCAL_REPOS": "1",  # the bench projects' origins are local folders
        **(env or {}),
    }
    stderr = log.open("ab") if log is not None else None
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "overnight",
            "agent",
            "daemon",
            "-q",
            queue,
            "--name",
            name,
            "--env-mode",
            "venv",
            "--gpus",
            "none",
            *args,
        ],
        env=variables,
        stdout=subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
    )


def first_line_after(client: redis.Redis, task_id: str, text: str, timeout: float = 60) -> float:
    """Block on the task's log until ``text`` arrives; the unix time it became readable."""
    key, last = keys.log(task_id), "0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.xread({key: last}, block=1000)
        now = time.time()
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get(b"line", b"").decode() == text:
                    return now
    raise SystemExit(f"task {task_id} printed no {text!r} within {timeout} s")


def wait_final(store: TaskStore, task_ids: Sequence[str], timeout: float = 600) -> None:
    """Return once every task finished (exit on another ending), polling every 50 ms.

    Tasks end about in queue order, so each poll reads the first few pending records only:
    the bench's own reading must not take the CPU the agents are measured on.
    """
    deadline = time.monotonic() + timeout
    pending = list(task_ids)
    while pending and time.monotonic() < deadline:
        records = store.get_many(pending[:20])
        ended = {r.id for r in records if r.status.is_final}
        failed = [r for r in records if r.status.is_final and r.status is not TaskStatus.FINISHED]
        if failed:
            raise SystemExit(f"task {failed[0].id} {failed[0].status.value}: {failed[0].error}")
        pending = [t for t in pending if t not in ended]
        if len(ended) < len(records):
            time.sleep(0.05)
    if pending:
        raise SystemExit(f"{len(pending)} tasks did not finish within {timeout} s")


def stop(*agents: subprocess.Popen[bytes]) -> None:
    for agent in agents:
        agent.terminate()
    for agent in agents:
        agent.wait(60)
