"""Throughput of reading metrics from a run's output (lines per second, one core).

The agent's output reader parses every line a task prints, on the thread that drains the task's
pipe, so the parser must keep up with the chattiest task. Prints lines/s for kinds of output:
prose (what most lines are), metric pairs, JSON lines, ANSI-coloured progress, lines at and past
the length bound, and a realistic mix through the whole stream (step carried over, tracker
updated, series thinned).

    python bench/metrics.py [--lines 200000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from overnight.metrics.parse import MAX_LINE, parse_line
from overnight.metrics.stream import MetricStream
from overnight.metrics.tracker import MetricTracker

KINDS: dict[str, Callable[[int], str]] = {
    "prose": lambda i: (
        f"Epoch {i % 10}/10: loaded batch {i} of 5000 in 0.{i % 97}s (data worker 3)"
    ),
    "pairs": lambda i: f"step={i} loss={1.0 / (i + 1):.6f} acc={i % 100 / 100:.3f} lr=3e-4",
    "json": lambda i: json.dumps({"step": i, "loss": 1.0 / (i + 1), "acc": 0.5, "phase": "train"}),
    "ansi": lambda i: (
        f"\x1b[2K\x1b[32m{i % 100:3d}%\x1b[0m|{'#' * (i % 40):40}| {i}/5000 [00:12<00:30]"
    ),
    "4 KB pairs": lambda i: " ".join(f"m{j}={j}.5" for j in range(400))[: MAX_LINE - 8] + " z=1",
    "too long": lambda i: "x=1 " * (MAX_LINE // 2),
}


def rate(lines: list[str], read: Callable[[str], object]) -> float:
    start = time.perf_counter()
    for line in lines:
        read(line)
    return len(lines) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    for kind, make in KINDS.items():
        count = args.lines if "KB" not in kind and "long" not in kind else args.lines // 20
        lines = [make(i) for i in range(count)]
        print(f"parse_line, {kind:<11} {rate(lines, parse_line):>12,.0f} lines/s")
    mix = [
        KINDS["prose"](i) if i % 10 else KINDS["pairs"](i) if i % 20 else KINDS["json"](i)
        for i in range(args.lines)
    ]
    stream = MetricStream(MetricTracker())
    print(f"stream, 90% prose mix  {rate(mix, stream.line):>12,.0f} lines/s")


if __name__ == "__main__":
    main()
