"""Snapshot time and spec size for a large working tree.

A repo of 20,000 tracked files (pushed to a local bare origin), 200 of them modified and 50
untracked files of 5 MB in all; prints the time of ``take_snapshot`` (cold, then the median of
warm runs), the spec's size, and the time to rebuild the tree from it.

    python bench/snapshot.py [--files 20000] [--modified 200] [--untracked 50] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from overnight.recorder.checkout import reconstruct
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True)


def build(base: Path, files: int, modified: int, untracked: int) -> Path:
    work = base / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    for i in range(files):
        path = work / f"pkg{i % 100:02d}" / f"sub{i % 7}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\nVALUE = {i}\n\n\ndef f(x):\n    return x + {i}\n")
    (work / "requirements.txt").write_text("numpy==2.0.0\ntorch==2.3.0\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "tree")
    git(base, "init", "-q", "--bare", "-b", "main", "origin.git")
    git(work, "remote", "add", "origin", str(base / "origin.git"))
    git(work, "push", "-q", "-u", "origin", "main")
    for i in range(0, files, max(1, files // modified))[:modified]:
        path = work / f"pkg{i % 100:02d}" / f"sub{i % 7}" / f"module_{i}.py"
        path.write_text(path.read_text() + f"\n# edited for the experiment {i}\n")
    each = 5 * 1024 * 1024 // max(1, untracked)
    for i in range(untracked):
        path = work / "experiments" / f"run{i % 5}" / f"artifact_{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(each))
    git(work, "status", "--porcelain")  # as a user's editor or shell prompt would
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--modified", type=int, default=200)
    parser.add_argument("--untracked", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        base = Path(tmp)
        started = time.perf_counter()
        work = build(base, args.files, args.modified, args.untracked)
        print(
            f"built repo: {args.files} tracked files, {args.modified} modified, "
            f"{args.untracked} untracked (5 MB) in {time.perf_counter() - started:.1f} s"
        )
        argv = ["python", "train.py", "--lr", "0.01"]
        times = []
        for _ in range(args.runs + 1):
            started = time.perf_counter()
            snap = take_snapshot(work, argv, SnapshotOptions())
            times.append(time.perf_counter() - started)
        spec_json = snap.to_json()
        patch = snap.spec.patch.size if snap.spec.patch else 0
        print(
            f"snapshot: cold {times[0]:.3f} s, warm median {statistics.median(times[1:]):.3f} s "
            f"(min {min(times[1:]):.3f}, max {max(times[1:]):.3f}, {args.runs} runs)"
        )
        print(
            f"spec: {len(spec_json) / 1e6:.2f} MB as JSON with blobs inlined; "
            f"patch {patch / 1e6:.2f} MB; spec without blobs {len(snap.spec.to_json())} bytes"
        )
        started = time.perf_counter()
        reconstruct(snap, base / "rebuilt")
        print(f"reconstruct from the local origin: {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
