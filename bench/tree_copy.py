"""What a task's copy of a cached tree costs now that git's object files are copied too.

Builds a repo of a research project's size (source files, history, some large binaries in the
packs), lets a workspace rebuild its tree once, then times the copies later tasks get, and the
part of each that copying the object files (instead of hard-linking them) adds.

    python bench/tree_copy.py [--files 3000] [--commits 150] [--binaries 20] [--binary-mb 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agent_setup import git  # first: it puts this checkout first on the path

from overnight.agent.workspace.workspaces import Workspaces
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot

ROUNDS = 5


def make_repo(base: Path, files: int, commits: int, binaries: int, binary_mb: int) -> Path:
    origin, work = base / "origin.git", base / "project"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin))
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    for n in range(files):
        path = work / f"pkg{n % 40}" / f"module_{n}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"def f{i}(x):\n    return x * {i} + {n}\n" for i in range(40)))
    (work / "data").mkdir()
    for n in range(binaries):
        (work / "data" / f"weights_{n}.bin").write_bytes(os.urandom(binary_mb << 20))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    for c in range(commits):
        for n in range(c % 7, files, max(1, files // 20)):
            path = work / f"pkg{n % 40}" / f"module_{n}.py"
            path.write_text(path.read_text() + f"# change {c}\n")
        git(work, "commit", "-q", "-am", f"change {c}")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "-u", "origin", "main")
    git(work, "repack", "-adq")
    (work / "pkg0" / "module_0.py").write_text("print('an uncommitted change')\n")
    return work


def objects_of(tree: Path) -> list[Path]:
    return [p for p in (tree / ".git" / "objects").rglob("*") if p.is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--commits", type=int, default=150)
    parser.add_argument("--binaries", type=int, default=20)
    parser.add_argument("--binary-mb", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        base = Path(tmp)
        work = make_repo(base, args.files, args.commits, args.binaries, args.binary_mb)
        snap = take_snapshot(work, ["python", "job.py"], SnapshotOptions())
        spaces = Workspaces(base / "ws")
        started = time.perf_counter()
        spaces.create("first", snap, lambda line: None)
        build = time.perf_counter() - started
        tree = spaces.tree_dir(snap)
        objects = objects_of(tree)
        object_bytes = sum(p.stat().st_size for p in objects)
        entries = sum(1 for _ in tree.rglob("*"))
        loose = base / "objects"  # a copy to link from: links to the tree would change it
        loose.mkdir()
        for i, path in enumerate(objects):
            shutil.copyfile(path, loose / str(i))
        objects = sorted(loose.iterdir())
        copies, copied, linked = [], [], []
        for n in range(ROUNDS):
            started = time.perf_counter()
            spaces.create(f"t{n}", snap, lambda line: None)
            copies.append(time.perf_counter() - started)
            spaces.remove(f"t{n}")
            for way, times in ((shutil.copyfile, copied), (os.link, linked)):
                out = base / "objects-only"
                out.mkdir()
                started = time.perf_counter()
                for i, path in enumerate(objects):
                    way(path, out / str(i))
                times.append(time.perf_counter() - started)
                shutil.rmtree(out)
        print(
            f"tree: {entries} paths, git objects {len(objects)} files, {object_bytes / 2**20:.0f} MiB"
        )
        print(f"first task (rebuild + copy): {build:.2f} s")
        print(
            f"each later task's copy:      {statistics.median(copies):.3f} s (median of {ROUNDS})"
        )
        print(
            f"  of which the object files: {statistics.median(copied):.3f} s copied, "
            f"{statistics.median(linked):.4f} s if hard-linked (as before)"
        )


if __name__ == "__main__":
    main()
