"""The pages besides the runs list and one run: compare (``overnight compare``'s data), a
sweep's leaderboard with a metric against a param, and the agents and queues."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from overnight.commands.info import agent_notes
from overnight.commands.leaderboard import Board, arrange, metric_names
from overnight.comparison.report import Comparison, compare_runs
from overnight.errors import OvernightError
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.index import Query
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.rqsync import queue_key
from overnight.queue.store import TaskStore
from overnight.ui.runview import Chart, diff_lines

QUEUE_ORDER_SHOWN = 50


# -- compare ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ComparePage:
    comparison: Comparison | None
    error: str | None = None


def compare_page(
    store: TaskStore, ids: Sequence[str], *, local_repo: Path | None, allow_local: bool
) -> ComparePage:
    try:
        return ComparePage(compare_runs(store, ids, local_repo=local_repo, allow_local=allow_local))
    except OvernightError as exc:
        return ComparePage(None, str(exc))


def patch_lines(patch: str) -> list[Any]:
    """A comparison's code diff drawn as the run page draws a patch."""
    return diff_lines(patch.encode())[0] if patch else []


# -- sweeps -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepPage:
    sweep: str
    board: Board | None
    metrics: list[str]
    params: list[str]
    metric: str
    param: str
    chart: Chart | None
    error: str | None = None


def sweep_page(store: TaskStore, sweep_id: str, *, sort: str, metric: str, param: str) -> SweepPage:
    try:
        sweep = store.resolve_sweep(sweep_id)
        records = store.find(Query(sweep=sweep, limit=None))
        names = metric_names(records)
        params = list(dict.fromkeys(p for r in records for p in r.params))
        metric = metric or (names[0] if names else "")
        param = param or (params[0] if params else "")
        board = arrange(records, sort=sort or (metric or None), metrics=[metric] if metric else [])
    except OvernightError as exc:
        return SweepPage(sweep_id, None, [], [], metric, param, None, str(exc))
    return SweepPage(sweep, board, names, params, metric, param, _scatter(records, metric, param))


def _scatter(records: Sequence[TaskRecord], metric: str, param: str) -> Chart | None:
    """The metric's last value of each run against its param (as a number), sorted by the param."""
    points = []
    for record in records:
        summary = record.metrics.get(metric)
        try:
            x = float(record.params[param])
        except (KeyError, ValueError):
            continue
        if summary is not None:
            points.append((x, float(summary.last)))
    if not points:
        return None
    points.sort()
    return Chart(
        "sweep", f"{metric} against {param}", param, [p[0] for p in points],
        {metric: [p[1] for p in points]},
    )  # fmt: skip


# -- agents and queues --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GpuRow:
    gpu: str
    task: str | None
    util: float | None
    mem_mb: float | None
    held_back: str | None


@dataclasses.dataclass(frozen=True)
class AgentRow:
    info: AgentInfo
    gpus: list[GpuRow]
    window: str | None  # "open until mon 07:00": the state and its next change
    notes: list[str]
    beat_ago: float


@dataclasses.dataclass(frozen=True)
class QueueRow:
    name: str
    counts: Mapping[str, int]
    agents: list[str]
    order: list[TaskRecord]  # the queued tasks, next first
    held: list[TaskRecord] = dataclasses.field(default_factory=list)  # kept off it, oldest first


def agents_page(store: TaskStore) -> tuple[list[AgentRow], list[QueueRow]]:
    agents = AgentRegistry(store.redis).list()
    now = time.time()
    rows = [_agent_row(a, now) for a in agents]
    active = store.get_many(
        store.index.ids(
            (
                TaskStatus.QUEUED,
                TaskStatus.HELD,
                TaskStatus.WAITING,
                TaskStatus.PREPARING,
                TaskStatus.RUNNING,
            )
        )
    )
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for record in active:
        counts[record.options.queue][record.status.value] += 1
    names = sorted(set(store.known_queues()) | {q for a in agents for q in a.queues})
    pipe = store.redis.pipeline(transaction=False)
    for name in names:
        pipe.lrange(queue_key(name), 0, QUEUE_ORDER_SHOWN - 1)
    orders = pipe.execute()
    queues = []
    for name, ids in zip(names, orders, strict=True):
        order = store.get_many([i.decode() if isinstance(i, bytes) else str(i) for i in ids])
        held = sorted(
            (r for r in active if r.status is TaskStatus.HELD and r.options.queue == name),
            key=lambda r: r.created,
        )[:QUEUE_ORDER_SHOWN]
        queues.append(
            QueueRow(name, counts[name], [a.name for a in agents if name in a.queues], order, held)
        )
    return rows, queues


def _agent_row(info: AgentInfo, now: float) -> AgentRow:
    usage: Mapping[str, Any] = _mapping(info.extra.get("usage"))
    slots = _mapping(info.extra.get("slots"))
    states = _mapping(slots.get("gpus")) or {g: {} for g in info.gpus}
    gpus = []
    for gpu, raw in states.items():
        state = _mapping(raw)
        task = str(state["task"]) if "task" in state else None
        live = _mapping(usage.get(task)) if task else {}
        gpus.append(
            GpuRow(
                str(gpu),
                task,
                _num(live.get(f"gpu{gpu}.util_pct")),
                _num(live.get(f"gpu{gpu}.mem_mb")),
                str(state["unavailable"]) if "unavailable" in state else None,
            )
        )
    windows = _mapping(info.extra.get("windows"))
    window = str(windows["state"]) if windows.get("state") else None
    return AgentRow(info, gpus, window, agent_notes(info), now - info.heartbeat)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
