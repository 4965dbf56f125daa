"""Leaderboards: tasks sorted by a metric, a param or their duration, with metric columns, and the
same table as CSV (``ls`` and ``summary`` share it).

A metric column is ``NAME`` (the metric's last value), ``NAME:min`` or ``NAME:max``; a sort key is
one of those, a param name or ``duration``/``created``, with ``-`` in front for descending. A name
is a metric when a selected task has that metric, else a param when one has that param. Tasks
lacking the value sort last, whatever the direction.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import click

from overnight.errors import UsageError
from overnight.queue.records import TaskRecord
from overnight.terminal import visible

STATS = ("last", "min", "max")
_FIELDS: dict[str, Callable[[TaskRecord, float], float | None]] = {
    "duration": lambda r, now: None if r.started is None else (r.ended or now) - r.started,
    "created": lambda r, now: r.created,
}
NOTE_WIDTH = 30
F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class MetricColumn:
    """One metric's value shown in a column: its last, lowest or highest."""

    name: str
    stat: str = "last"

    @classmethod
    def parse(cls, text: str) -> MetricColumn:
        """``loss`` -> last value, ``loss:min``, ``loss:max``; raises :class:`UsageError`."""
        name, sep, stat = text.strip().rpartition(":")
        if not sep or stat not in STATS:
            name, stat = text.strip(), "last"
        if not name:
            raise UsageError(f"invalid metric {text!r}: use NAME, NAME:min or NAME:max")
        return cls(name, stat)

    @property
    def label(self) -> str:
        return self.name if self.stat == "last" else f"{self.name}:{self.stat}"

    def value(self, record: TaskRecord) -> float | None:
        summary = record.metrics.get(self.name)
        return None if summary is None else float(getattr(summary, self.stat))


@dataclasses.dataclass(frozen=True)
class SortKey:
    """What to sort by: ``loss``, ``-acc:max``, ``lr``, ``duration``."""

    name: str
    descending: bool = False

    @classmethod
    def parse(cls, text: str) -> SortKey:
        text = text.strip()
        descending = text.startswith("-")
        name = text[1:] if descending else text
        if not name:
            raise UsageError(
                f"invalid --sort {text!r}: name a metric, a param or duration (-NAME: descending)"
            )
        return cls(name, descending)


@dataclasses.dataclass(frozen=True)
class Board:
    """The tasks in the order shown, the metric columns, and what to warn about."""

    records: list[TaskRecord]
    columns: list[MetricColumn]
    warning: str | None = None  # shown metrics that no selected task has


def arrange(
    records: Sequence[TaskRecord],
    *,
    sort: str | None,
    metrics: Sequence[str],
    limit: int | None = None,
    now: float | None = None,
) -> Board:
    """Sort ``records`` by ``sort`` (if given), keep the first ``limit``, pick the columns."""
    key = SortKey.parse(sort) if sort else None
    ordered = sort_records(records, key, now=now) if key is not None else list(records)
    columns = metric_columns(metrics, key, records)
    missing = missing_metrics(columns, records)
    warning = None
    if missing and records:
        warning = (
            f"no selected task has the metric {listed(missing)} (yet); their metrics: "
            f"{listed(metric_names(records))}"
        )
    return Board(ordered[:limit] if limit else ordered, columns, warning)


def metric_columns(
    given: Sequence[str], sort: SortKey | None, records: Sequence[TaskRecord]
) -> list[MetricColumn]:
    """The columns asked for with ``--metric``, then the sort's metric if it is one and not shown."""
    columns = list(dict.fromkeys(MetricColumn.parse(text) for text in given))
    if sort is not None:
        column = MetricColumn.parse(sort.name)
        if column not in columns and column.name in metric_names(records):
            columns.append(column)
    return columns


def metric_names(records: Iterable[TaskRecord]) -> list[str]:
    """Every metric name the records have, sorted."""
    return sorted({name for r in records for name in r.metrics})


def missing_metrics(columns: Sequence[MetricColumn], records: Sequence[TaskRecord]) -> list[str]:
    """Names of shown metrics no record has (a typo, or a sweep that has not reported yet)."""
    have = set(metric_names(records))
    return [c.name for c in columns if c.name not in have]


def sort_records(
    records: Sequence[TaskRecord], key: SortKey, *, now: float | None = None
) -> list[TaskRecord]:
    """``records`` sorted by ``key``; those lacking the value last, in their order. Raises
    :class:`UsageError` naming the metrics and params the records have when none has ``key``."""
    value = _value_of(key.name, records, time.time() if now is None else now)
    keyed = [(value(r), r) for r in records]
    present = [(v, r) for v, r in keyed if v is not None]
    present.sort(key=lambda pair: pair[0], reverse=key.descending)
    return [r for _, r in present] + [r for v, r in keyed if v is None]


def _value_of(
    name: str, records: Sequence[TaskRecord], now: float
) -> Callable[[TaskRecord], tuple[Any, ...] | None]:
    column = MetricColumn.parse(name)
    if column.name in metric_names(records):

        def metric(record: TaskRecord) -> tuple[Any, ...] | None:
            found = column.value(record)
            return None if found is None else (found,)

        return metric
    params = {p for r in records for p in r.params}
    if name in params:
        texts = [r.params[name] for r in records if name in r.params]
        numeric = all(_number(t) is not None for t in texts)

        def param(record: TaskRecord) -> tuple[Any, ...] | None:
            text = record.params.get(name)
            if text is None:
                return None
            return (_number(text),) if numeric else (text,)

        return param
    if name in _FIELDS:
        field = _FIELDS[name]

        def builtin(record: TaskRecord) -> tuple[Any, ...] | None:
            found = field(record, now)
            return None if found is None else (found,)

        return builtin
    if not records:
        return lambda record: None
    raise UsageError(
        f"cannot sort by {name!r}: no selected task has that metric or param; their metrics: "
        f"{listed(metric_names(records))}; params: {listed(sorted(params))}; or sort by "
        f"{' or '.join(_FIELDS)}"
    )


def listed(names: Sequence[str], most: int = 20) -> str:
    """Names for a message, the first ``most`` of them: ``a, b, c and 7 more``."""
    if not names:
        return "none"
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def format_value(value: float | None) -> str:
    """A metric value in a table: six significant digits, ``-`` when the task has none."""
    return "-" if value is None else f"{value:.6g}"


def metric_values(record: TaskRecord, columns: Sequence[MetricColumn]) -> dict[str, float | None]:
    return {c.label: c.value(record) for c in columns}


def short_note(note: str) -> str:
    """The first line of a note, cut to :data:`NOTE_WIDTH` characters."""
    line = note.strip().splitlines()[0] if note.strip() else ""
    return line if len(line) <= NOTE_WIDTH else line[: NOTE_WIDTH - 1] + "…"


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV with a header: nested objects flattened (``params.lr``, ``metrics.loss``, as
    ``pandas.json_normalize`` names them), columns in first-seen order, None as an empty cell;
    text made :func:`~overnight.terminal.visible` (a task's name stays one line, one cell)."""
    flat = [{visible(k): _cell(v) for k, v in _flatten(row).items()} for row in rows]
    headers = list(dict.fromkeys(k for row in flat for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=headers, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def echo_csv(rows: Sequence[Mapping[str, Any]]) -> None:
    click.echo(to_csv(rows), nl=False)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return visible(value) if isinstance(value, str) else value


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = " ".join(str(v) for v in value)  # tags
        else:
            out[f"{prefix}{key}"] = value
    return out


def leaderboard_options(f: F) -> F:
    """``--sort``, ``--metric`` and ``--csv``, shared by ``ls`` and ``summary``."""
    f = click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV (for pandas).")(
        f
    )
    f = click.option(
        "--metric",
        "metrics",
        multiple=True,
        metavar="NAME",
        help="Show a column of this metric's last value (NAME:min, NAME:max: its lowest, highest); "
        "repeat for more.",
    )(f)
    return click.option(
        "--sort",
        default=None,
        metavar="KEY",
        help="Sort by a metric's last value (NAME:min, NAME:max), a param or duration; -KEY: "
        "descending. Tasks without it come last.",
    )(f)


def check_formats(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise UsageError("--json and --csv print the table two ways; pick one")
