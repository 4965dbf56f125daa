"""``overnight top`` (a live view of agents, their GPUs and running tasks) and ``overnight summary``
(the Monday-morning view of what ran since a moment).

Both read what the daemon publishes; these keys are the contract:

- ``AgentInfo.extra["slots"]``: :meth:`overnight.agent.gpus.allocator.Allocator.describe`;
- ``AgentInfo.extra["windows"]``: ``Windows.to_dict()`` plus ``"state"``: ``Windows.describe(now)``;
- ``AgentInfo.extra["usage"]``: task id -> ``Monitor.latest()`` of each running task (live values);
- ``TaskRecord.extra["resources"]``: ``Monitor.report()`` (peak and mean per metric), written
  every ``report_interval`` while the task runs and when it ends; its time series is kept apart
  (``TaskStore.series``) so that listing records stays fast.

Anything missing is shown as unknown, never as an error.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from overnight.commands.common import echo, echo_lines, store_for
from overnight.commands.leaderboard import (
    MetricColumn,
    arrange,
    check_formats,
    echo_csv,
    format_value,
    leaderboard_options,
    metric_values,
    short_note,
)
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.durations import parse_since
from overnight.queue.failures import FailureKind
from overnight.queue.index import Query
from overnight.queue.reaper import reap_lost
from overnight.queue.records import ACTIVE_STATUSES, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.terminal import visible
from overnight.units import format_duration

LOOKBACK = 7 * 86400  # summary also looks at tasks created this long before --since
_WAITING = frozenset({TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.HELD})
_FAILED = frozenset({TaskStatus.FAILED, TaskStatus.LOST})


def offer_problem(record: TaskRecord, agents: Sequence[AgentInfo]) -> str | None:
    """Why no live agent could ever run this waiting task ("no agent offers 8 GPUs on queue gpu")."""
    if record.status not in _WAITING:
        return None
    queue, wanted = record.options.queue, record.options.gpus
    serving = [a for a in agents if queue in a.queues]
    if not serving:
        return f"no live agent serves queue {queue}"
    if wanted and max(len(a.gpus) for a in serving) < wanted:
        return f"no agent offers {wanted} GPUs on queue {queue}"
    return None


def live_usage(record: TaskRecord, agents: Sequence[AgentInfo]) -> str | None:
    """What a running task uses now, as its agent last published it ("CPU 95 %, RSS 2.1 GB")."""
    if record.status is not TaskStatus.RUNNING:
        return None
    agent = next((a for a in agents if a.name == record.agent), None)
    usage = agent.extra.get("usage") if agent is not None else None
    live = usage.get(record.id) if isinstance(usage, Mapping) else None
    if not isinstance(live, Mapping):
        return None
    parts = []
    for metric, label in (("cpu_pct", "CPU"), ("rss_mb", "RSS"), ("gpu_mem_mb", "GPU memory")):
        value = live.get(metric)
        if isinstance(value, (int, float)):
            parts.append(
                f"{label} {value:.0f} %" if metric == "cpu_pct" else f"{label} {_size(value)}"
            )
    utils = [v for k, v in live.items() if k.endswith(".util_pct") and isinstance(v, (int, float))]
    if utils:
        parts.append(f"GPU utilisation {sum(utils) / len(utils):.0f} %")
    return ", ".join(parts) or None


def peak_gpu_memory_mb(record: TaskRecord) -> float | None:
    """The task's peak GPU memory (all its GPUs together), when it was measured."""
    stats = _resources(record).get("summary", {}).get("gpu_mem_mb")
    return float(stats["peak"]) if stats else None


def _resources(record: TaskRecord) -> Mapping[str, Any]:
    value = record.extra.get("resources")
    return value if isinstance(value, Mapping) else {}


def _size(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _label(record: TaskRecord) -> str:
    return record.name or " ".join(record.argv)[:40]


def _params(record: TaskRecord) -> str:
    return " ".join(f"{k}={v}" for k, v in record.params.items())


def _runtime(record: TaskRecord, now: float) -> float | None:
    if record.started is None:
        return None
    return (record.ended or now) - record.started


# -- summary ------------------------------------------------------------------------------------


def tasks_since(
    store: TaskStore, since: float | None, *, queue: str | None = None, sweep: str | None = None
) -> list[TaskRecord]:
    """Tasks created, started or ended at or after ``since`` (None: any time), and tasks still
    active; newest first."""
    low = None if since is None else since - LOOKBACK
    found = store.find(Query(queue=queue, since=low, sweep=sweep, limit=None))
    if since is None:
        return found
    return [
        r
        for r in found
        if r.status in ACTIVE_STATUSES or max(r.created, r.started or 0.0, r.ended or 0.0) >= since
    ]


def summary_report(
    records: Sequence[TaskRecord],
    since: float | None,
    now: float,
    columns: Sequence[MetricColumn] = (),
    *,
    sweep: str | None = None,
) -> dict[str, Any]:
    """JSON-ready: counts by status and one entry per task, in the order given; ``since`` is None
    for a whole sweep."""
    counts = collections.Counter(r.status.value for r in records)
    kinds = collections.Counter(
        r.failure.value for r in records if r.status in _FAILED and r.failure is not None
    )
    return {
        "since": since,
        "sweep": sweep,
        "now": now,
        "counts": dict(counts.most_common()),
        "failures": {k.value: kinds[k.value] for k in FailureKind if kinds[k.value]},
        "columns": [c.label for c in columns],
        "tasks": [
            {
                "id": r.id,
                "status": r.status.value,
                "name": _label(r),
                "params": dict(r.params),
                "metrics": metric_values(r, columns),
                "note": r.note,
                "sweep": r.sweep,
                "duration": _runtime(r, now),
                "exit_code": r.exit_code,
                "peak_gpu_mem_mb": peak_gpu_memory_mb(r),
                "error": (r.error or "").splitlines()[0] if r.error else None,
                "phase": r.phase.value if r.phase else None,
                "failure": r.failure.value if r.failure else None,
            }
            for r in records
        ],
    }


def render_summary(report: Mapping[str, Any]) -> list[str]:
    if report["since"] is None:
        where = f"sweep {visible(str(report['sweep']))}"
    else:
        where = f"since {datetime.fromtimestamp(report['since']):%a %Y-%m-%d %H:%M}"
    total = sum(report["counts"].values())
    counts = ", ".join(f"{n} {status}" for status, n in report["counts"].items())
    head = f"{where}: {total} task{'s' if total != 1 else ''}"
    lines = [f"{head}: {counts}" if total else head]
    if not total:
        return lines
    failures = report.get("failures") or {}
    if failures:
        kinds = ", ".join(f"{n} {FailureKind(k).label}" for k, n in failures.items())
        lines.append(f"failures by kind: {kinds}")
    columns = [visible(c) for c in report["columns"]]
    note = any(task["note"] for task in report["tasks"])
    rows = [["ID", "STATUS", "NAME", "PARAMS", *columns, "DURATION", "EXIT", "PEAK GPU MEM"]]
    rows[0] += ["NOTE"] * note
    errors: dict[int, str] = {}
    for task in report["tasks"]:
        rows.append(
            [
                visible(task["id"][:12]),
                task["status"],
                visible(task["name"]),
                visible(" ".join(f"{k}={v}" for k, v in task["params"].items())),
                *(format_value(task["metrics"][c]) for c in report["columns"]),
                format_duration(task["duration"]) or "-",
                "-" if task["exit_code"] is None else str(task["exit_code"]),
                _size(task["peak_gpu_mem_mb"]),
                *[visible(short_note(task["note"]))] * note,
            ]
        )
        if task["error"] and task["status"] in {s.value for s in _FAILED}:
            phase = f"[{task['phase']}] " if task["phase"] else ""
            kind = task.get("failure")
            label = f" ({FailureKind(kind).label})" if kind else ""
            errors[len(rows) - 1] = f"{' ' * 14}error: {phase}{task['error']}{label}"
    for index, line in enumerate(_table(rows)):
        lines.append(line)
        if index in errors:
            lines.append(errors[index])
    return lines


# -- top ----------------------------------------------------------------------------------------


def render_top(
    agents: Sequence[AgentInfo], tasks: Mapping[str, TaskRecord], now: float
) -> list[str]:
    """Agents with their GPUs, slots, window and running tasks; then waiting tasks by queue."""
    lines: list[str] = []
    for agent in agents:
        lines.extend(_agent_lines(agent, tasks, now))
    if not agents:
        lines.append("no live agents")
    waiting = collections.Counter(r.options.queue for r in tasks.values() if r.status in _WAITING)
    if waiting:
        lines.append("waiting: " + ", ".join(f"{q} {n}" for q, n in sorted(waiting.items())))
    for record in tasks.values():
        problem = offer_problem(record, agents)
        if problem:
            lines.append(f"  {record.id[:12]} {_label(record)}: {problem}")
    return lines


def _agent_lines(agent: AgentInfo, tasks: Mapping[str, TaskRecord], now: float) -> list[str]:
    windows = agent.extra.get("windows") or {}
    head = [
        agent.name,
        agent.state,
        f"queues {','.join(agent.queues)}",
        agent.env_mode,
        f"up {format_duration(now - agent.started)}" if agent.started else "",
        f"beat {format_duration(now - agent.heartbeat)} ago",
        f"window {windows['state']}" if windows.get("state") else "",
    ]
    lines = ["  ".join(part for part in head if part)]
    usage: Mapping[str, Mapping[str, float]] = agent.extra.get("usage") or {}
    slots = agent.extra.get("slots") or {}
    gpus: Mapping[str, Mapping[str, str]] = slots.get("gpus") or {g: {} for g in agent.gpus}
    for gpu, state in gpus.items():
        if "task" in state:
            live = _live(state["task"], usage, tasks)
            util = live.get(f"gpu{gpu}.util_pct")
            mem = live.get(f"gpu{gpu}.mem_mb")
            shown = f"util {util:.0f} %" if util is not None else "util -"
            lines.append(f"  GPU {gpu}  {state['task'][:12]}  {shown}  mem {_size(mem)}")
        elif "unavailable" in state:
            lines.append(f"  GPU {gpu}  held back: {state['unavailable']}")
        else:
            lines.append(f"  GPU {gpu}  free")
    if "cpu_slots" in slots:
        lines.append(f"  CPU slots: {len(slots.get('cpu_tasks', []))} of {slots['cpu_slots']} busy")
    reserved = slots.get("reserved") or []
    if reserved:
        shown = ", ".join(f"{r['task'][:12]} ({r['gpus']} GPUs)" for r in reserved)
        lines.append(f"  waiting for room: {shown}")
    for task_id in agent.tasks:
        record = tasks.get(task_id)
        live = _live(task_id, usage, tasks)
        parts = [
            f"  {task_id[:12]}",
            record.status.value if record else "?",
            format_duration(_runtime(record, now)) if record else "",
            f"{_label(record)} {_params(record)}".strip() if record else "",
            f"cpu {live['cpu_pct']:.0f} %" if "cpu_pct" in live else "",
            f"rss {_size(live['rss_mb'])}" if "rss_mb" in live else "",
            f"gpu mem {_size(live['gpu_mem_mb'])}" if "gpu_mem_mb" in live else "",
        ]
        lines.append("  ".join(p for p in parts if p))
    return lines


def _live(
    task_id: str, usage: Mapping[str, Mapping[str, float]], tasks: Mapping[str, TaskRecord]
) -> Mapping[str, float]:
    if task_id in usage:
        return usage[task_id]
    record = tasks.get(task_id)
    summary = _resources(record).get("summary", {}) if record else {}
    return {metric: stats["last"] for metric, stats in summary.items() if "last" in stats}


def top_snapshot(store: TaskStore, registry: AgentRegistry) -> dict[str, Any]:
    """What ``top`` shows, read once: live agents and the active and waiting tasks."""
    agents = registry.list()
    ids = store.index.ids(ACTIVE_STATUSES | _WAITING)
    tasks = {r.id: r for r in store.get_many(ids)}
    return {"agents": agents, "tasks": tasks, "now": time.time()}


# -- commands -----------------------------------------------------------------------------------


@click.command("top")
@click.option("-n", "--interval", type=float, default=2.0, show_default=True, help="Seconds.")
@click.option("--once", is_flag=True, help="Print one view and exit.")
@click.option("--json", "as_json", is_flag=True, help="One view as JSON (implies --once).")
@click.option("--redis-url", help="Redis to read (default: $OVERNIGHT_REDIS_URL or config).")
def top_command(interval: float, once: bool, as_json: bool, redis_url: str | None) -> None:
    """A live view of agents, their GPUs and running tasks (Ctrl-C to quit)."""
    _, store = store_for(redis_url)
    registry = AgentRegistry(store.redis)
    while True:
        view = top_snapshot(store, registry)
        if as_json:
            data = {
                "agents": [json.loads(a.to_json()) for a in view["agents"]],
                "tasks": [json.loads(r.to_json()) for r in view["tasks"].values()],
            }
            click.echo(json.dumps(data, indent=2))
            return
        lines = render_top(view["agents"], view["tasks"], view["now"])
        if once:
            echo_lines(lines)
            return
        click.clear()
        click.echo(f"overnight top  {datetime.now():%H:%M:%S}  (every {interval:g} s)\n")
        echo_lines(lines)
        try:
            time.sleep(interval)
            reap_lost(store)
        except KeyboardInterrupt:
            return


@click.command("summary")
@click.option(
    "--since",
    default=None,
    metavar="WHEN",
    help="A duration ago (16h, 3d) or a date [default: 16h; with --sweep: the whole sweep].",
)
@click.option("-q", "--queue", help="Only this queue.")
@click.option("--sweep", default=None, metavar="ID", help="One sweep's table (or task ID's sweep).")
@leaderboard_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--redis-url", help="Redis to read (default: $OVERNIGHT_REDIS_URL or config).")
def summary_command(
    since: str | None,
    queue: str | None,
    sweep: str | None,
    sort: str | None,
    metrics: tuple[str, ...],
    as_csv: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """What ran since a moment: counts by status; per task params, duration, exit, GPU peak.

    \b
    overnight summary --sweep 3f9a1c --metric loss --metric acc:max --sort -acc:max
    overnight summary --sweep 3f9a1c --metric loss --csv > sweep.csv
    """
    check_formats(as_json, as_csv)
    start = None if since is None and sweep is not None else parse_since(since or "16h")
    _, store = store_for(redis_url)
    found_sweep = store.resolve_sweep(sweep) if sweep is not None else None
    records = tasks_since(store, start, queue=queue, sweep=found_sweep)
    board = arrange(records, sort=sort, metrics=metrics)
    if board.warning:
        echo(f"overnight: note: {board.warning}", err=True)
    report = summary_report(board.records, start, time.time(), board.columns, sweep=found_sweep)
    if as_csv:
        echo_csv(report["tasks"])
    elif as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        echo_lines(render_summary(report))


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(top_command)
    cli.add_command(summary_command)
