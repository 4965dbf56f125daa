"""A tiny "training run": fits y = 3x + 1 with gradient descent and prints progress and a metric.

Pure Python (no packages to install), so the demo's environment builds in seconds; it reads
``config.json`` beside it (and ``extra_points.json`` when present), so an uncommitted edit or an
untracked file changes what the agent runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per epoch, to look busy")
    args = parser.parse_args()

    config = json.loads((Path(__file__).parent / "config.json").read_text())
    rng = random.Random(args.seed)
    points = [(x, 3.0 * x + 1.0 + rng.gauss(0, config["noise"])) for x in _grid(config["points"])]
    extra = Path(__file__).parent / "extra_points.json"
    if extra.exists():  # the demo adds this file without committing it
        points += [(float(x), float(y)) for x, y in json.loads(extra.read_text())]
        print(f"using {extra.name}", flush=True)
    weight, bias = 0.0, 0.0
    task = os.environ.get("OVERNIGHT_TASK_ID", "local")
    print(f"task {task}: lr={args.lr} epochs={args.epochs} points={len(points)}", flush=True)
    for epoch in range(1, args.epochs + 1):
        grad_w = sum(2 * (weight * x + bias - y) * x for x, y in points) / len(points)
        grad_b = sum(2 * (weight * x + bias - y) for x, y in points) / len(points)
        weight -= args.lr * grad_w
        bias -= args.lr * grad_b
        print(f"epoch {epoch}/{args.epochs} loss={_loss(points, weight, bias):.4f}", flush=True)
        time.sleep(args.sleep)
    loss = _loss(points, weight, bias)
    print(json.dumps({"metric": "loss", "value": round(loss, 6), "w": weight, "b": bias}))
    return 0 if loss == loss else 1  # NaN (a diverged run) fails


def _grid(count: int) -> list[float]:
    return [i / max(1, count - 1) for i in range(count)]


def _loss(points: list[tuple[float, float]], weight: float, bias: float) -> float:
    return sum((weight * x + bias - y) ** 2 for x, y in points) / len(points)


if __name__ == "__main__":
    sys.exit(main())
