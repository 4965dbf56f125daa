"""One run's page: its record and spec as ``overnight show`` reads them, its code (the recorded
patch against its commit), its log's last lines, its resource and metric series as charts, and
its outputs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from overnight.commands.reports import live_usage, offer_problem
from overnight.commands.views import describe_hardware, wait_reason
from overnight.errors import CorruptRecord, SpecError
from overnight.outputs import manifest
from overnight.queue.agents import AgentRegistry
from overnight.queue.logs import LogEntry
from overnight.queue.records import TaskRecord
from overnight.queue.store import TaskStore
from overnight.recorder.requirements import without_credentials
from overnight.spec import TaskSpec
from overnight.ui.ansi import to_html

LOG_LINES = 500
"""Lines of the log the page opens with (the rest: the plain-text log, or follow)."""
MAX_PATCH_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class DiffLine:
    """One line of the code diff and how it is drawn: ``file``, ``hunk``, ``add``, ``del``, ``ctx``."""

    kind: str
    text: str


@dataclasses.dataclass(frozen=True)
class Chart:
    """One uPlot chart: x values, and one or more named y series of the same length."""

    id: str
    title: str
    x_label: str
    x: list[float]
    series: dict[str, list[float | None]]

    def data(self) -> dict[str, Any]:
        return {"title": self.title, "x_label": self.x_label, "x": self.x, "series": self.series}


@dataclasses.dataclass(frozen=True)
class LogLine:
    id: str
    time: float
    html: str
    kind: str  # "out", "agent", "marker", "forged"


@dataclasses.dataclass(frozen=True)
class RunView:
    record: TaskRecord
    spec: TaskSpec | None
    spec_problem: str | None
    hardware: str | None
    diff: list[DiffLine]
    diff_note: str | None
    requirements: str
    log: list[LogLine]
    resource_charts: list[Chart]
    metric_charts: list[Chart]
    outputs: manifest.Manifest
    live: str | None
    problem: str | None
    waits: str | None = None  # why an agent leaves it queued for now (its window)

    @property
    def log_after(self) -> str:
        """The entry id the page's live log continues after ("0": from the start)."""
        return next((line.id for line in reversed(self.log) if line.kind != "marker"), "0")


def run_view(store: TaskStore, task_id: str) -> RunView:
    record = store.get(task_id)
    spec, problem, patch = None, None, None
    try:
        snapshot = store.load_snapshot(record.id)
        spec = snapshot.spec
        patch = snapshot.blob(spec.patch)
    except (SpecError, CorruptRecord) as exc:
        problem = str(exc)
    hardware = record.extra.get("hardware")
    agents = AgentRegistry(store.redis).list()
    diff, diff_note = diff_lines(patch)
    return RunView(
        record=record,
        spec=spec,
        spec_problem=problem,
        hardware=describe_hardware(hardware) if isinstance(hardware, Mapping) else None,
        diff=diff,
        diff_note=diff_note,
        requirements=without_credentials(spec.requirements.text) if spec else "",
        log=log_lines(store.logs.tail(record.id, LOG_LINES)),
        resource_charts=resource_charts(store.series(record.id)),
        metric_charts=metric_charts(store.metric_series(record.id)),
        outputs=manifest.read(store.redis, record.id),
        live=live_usage(record, agents),
        problem=offer_problem(record, agents),
        waits=wait_reason(store, record),
    )


def log_lines(entries: Sequence[LogEntry]) -> list[LogLine]:
    return [log_line(e) for e in entries]


def log_line(entry: LogEntry) -> LogLine:
    if entry.marker:
        kind = "marker"
    elif entry.agent:
        kind = "agent"
    else:
        kind = "forged" if entry.forged else "out"
    return LogLine(entry.id, entry.time, to_html(entry.line), kind)


def diff_lines(patch: bytes | None) -> tuple[list[DiffLine], str | None]:
    """The patch's lines, each with its kind; a note instead when there is none or it is huge."""
    if patch is None:
        return [], "no uncommitted changes: the run's code is its commit"
    if len(patch) > MAX_PATCH_BYTES:
        return [], f"the patch is {len(patch)} bytes, too big to show here"
    out = []
    for line in patch.decode("utf-8", "replace").splitlines():
        if line.startswith(("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append(DiffLine(kind, line))
    return out, None


def resource_charts(series: Mapping[str, Any]) -> list[Chart]:
    """A chart per resource (``cpu_pct``, ``rss_mb``, ``gpu0.util_pct``...): value over seconds."""
    charts = []
    for n, (name, points) in enumerate(sorted(series.items())):
        xs, ys = _points(points, x=0, y=1)
        if xs:
            charts.append(Chart(f"res{n}", str(name), "seconds", xs, {str(name): ys}))
    return charts


def metric_charts(series: Mapping[str, Sequence[Any]]) -> list[Chart]:
    """A chart per metric: value over its step (over seconds where it gave no steps)."""
    charts = []
    for n, (name, points) in enumerate(sorted(series.items())):
        with_steps = all(_is_number(p[1]) for p in points if isinstance(p, list) and len(p) >= 3)
        xs, ys = _points(points, x=1 if with_steps else 0, y=2)
        if xs:
            label = "step" if with_steps else "seconds"
            charts.append(Chart(f"met{n}", str(name), label, xs, {str(name): ys}))
    return charts


def _points(points: Any, *, x: int, y: int) -> tuple[list[float], list[float | None]]:
    """Numbers at ``x`` and ``y`` of each point (malformed points left out), sorted by x."""
    if not isinstance(points, list):
        return [], []
    pairs = []
    for point in points:
        if isinstance(point, list) and len(point) > max(x, y):
            px, py = point[x], point[y]
            if _is_number(px) and _is_number(py):
                pairs.append((float(px), float(py)))
    pairs.sort(key=lambda p: p[0])
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
