"""Task records: what Redis holds about each task besides its spec, and the status model."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from overnight.errors import CorruptRecord
from overnight.metrics.summary import MetricSummary
from overnight.queue import keys
from overnight.queue.failures import DEFAULT_RETRY_ON, FailureKind


class TaskStatus(str, enum.Enum):
    """Where a task is in its life. ``finished`` means exit code 0."""

    QUEUED = "queued"
    WAITING = "waiting"  # waits for another task (--after)
    HELD = "held"  # kept off its queue by `overnight hold` until `overnight release`
    PREPARING = "preparing"  # workspace and environment being built
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"
    LOST = "lost"  # its agent vanished
    CORRUPT = "corrupt"  # shown for records that cannot be decoded; never stored

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.LOST}
)
ACTIVE_STATUSES = frozenset({TaskStatus.PREPARING, TaskStatus.RUNNING})
"""Statuses of a task an agent holds: it has a heartbeat, and may be declared lost."""


class Phase(str, enum.Enum):
    """The step a failure happened in."""

    SUBMIT = "submit"
    WORKSPACE = "workspace"
    ENVIRONMENT = "environment"
    RUN = "run"
    AGENT = "agent"


FAILED_ON = "failed_on"
"""The ``extra`` key of a failed record saying which part of its spec the failure came from
(``"requirements"``): a retry of the same spec meets it again."""


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How a task is to be run, chosen at enqueue time (not part of the recorded snapshot)."""

    queue: str = "default"
    gpus: int = 0
    image: str | None = None
    timeout: float | None = None  # seconds; None means no limit
    retries: int = 0
    after: tuple[str, ...] = ()  # task ids this one waits for
    grace: float | None = None  # seconds between SIGTERM and SIGKILL; None: the agent's default
    expect: float | None = None  # seconds it is expected to run (--expect); None: learned
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON  # failure kinds retries are for (queue.failures)
    notify: tuple[
        str, ...
    ] = ()  # where its failure and its sweep's end are told (overnight.notify)
    notify_metric: str | None = None  # a sweep's best run by it: loss, -acc:max (highest)


@dataclasses.dataclass(frozen=True)
class Change:
    """The record fields a transition sets besides the status; None leaves a field as it is.

    ``extra`` is merged into the record's. Checked when made, so a change that reaches Redis is
    well typed (and mypy catches a misspelled field at the call).
    """

    agent: str | None = None
    gpu_ids: tuple[str, ...] | None = None
    exit_code: int | None = None
    phase: Phase | None = None
    error: str | None = None
    extra: Mapping[str, Any] | None = None
    attempt: int | None = None
    name: str | None = None
    metrics: Mapping[str, MetricSummary] | None = None  # replaces the record's metrics
    queue: str | None = None  # moves the task to this queue (its options' queue)
    failure: FailureKind | None = None

    def __post_init__(self) -> None:
        if self.failure is not None:
            object.__setattr__(self, "failure", FailureKind(self.failure))
        for field in ("agent", "error", "name", "queue"):
            value = getattr(self, field)
            if value is not None:
                _str(value)
        for field in ("exit_code", "attempt"):
            value = getattr(self, field)
            if value is not None:
                _int(value)
        if self.attempt is not None and self.attempt < 0:
            raise ValueError(f"attempt must be 0 or more, not {self.attempt}")
        if self.gpu_ids is not None:
            object.__setattr__(self, "gpu_ids", _strs(self.gpu_ids))
        if self.phase is not None:
            object.__setattr__(self, "phase", Phase(self.phase))
        if self.extra is not None:
            object.__setattr__(self, "extra", dict(_mapping(dict(self.extra))))
        if self.metrics is not None:
            object.__setattr__(self, "metrics", _metrics_of(dict(self.metrics)))

    def applied(self, record: TaskRecord) -> TaskRecord:
        """``record`` with these fields set."""
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
        if self.extra is not None:
            values["extra"] = {**record.extra, **self.extra}
        if self.queue is not None:
            values["options"] = dataclasses.replace(record.options, queue=values.pop("queue"))
        return dataclasses.replace(record, **values)


@dataclasses.dataclass(frozen=True)
class StatusChange:
    status: TaskStatus
    at: float
    note: str = ""


@dataclasses.dataclass
class TaskRecord:
    """One task as stored in Redis; its spec is stored once, content-addressed, under
    ``keys.spec(spec_id)`` (:mod:`overnight.queue.blobs`)."""

    id: str
    spec_id: str  # sha256 of the recorded spec JSON, shared by a sweep's tasks, retries and clones
    options: TaskOptions
    status: TaskStatus = TaskStatus.QUEUED
    created: float = 0.0
    history: list[StatusChange] = dataclasses.field(default_factory=list)
    name: str | None = None
    argv: tuple[str, ...] = ()  # what this task runs: the recorded argv with sweep/clone params set
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()
    agent: str | None = None
    gpu_ids: tuple[str, ...] = ()
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    phase: Phase | None = None
    error: str | None = None
    failure: FailureKind | None = None  # a failed or lost task's kind of failure
    attempt: int = 0
    retry_of: str | None = None
    clone_of: str | None = None
    sweep: str | None = None  # the sweep id of the ``--sweep`` enqueue that made it (or its retry)
    note: str = ""  # why this run exists: the spec's note (``-m``), or a clone's own
    notes: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # hardware, resource peaks...
    metrics: dict[str, MetricSummary] = dataclasses.field(default_factory=dict)  # name -> summary

    def to_json(self) -> str:
        """Compact JSON: fields at their default value are left out (``from_dict`` restores them),
        which keeps a finished task's record small in Redis."""
        data = _without_defaults(self)
        data["options"] = _without_defaults(self.options)
        data["history"] = [_without_defaults(h) for h in self.history]
        if self.metrics:
            data["metrics"] = {name: m.to_dict() for name, m in self.metrics.items()}
        return json.dumps(data, separators=(",", ":"), default=_enum_value)

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskRecord:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CorruptRecord(
                f"task record cannot be decoded: it is not valid JSON ({exc})"
            ) from exc
        if not isinstance(data, dict):
            raise CorruptRecord(
                f"task record cannot be decoded: it is JSON {type(data).__name__}, not an object"
            )
        try:
            return cls.from_dict(data)
        except KeyError as exc:
            raise CorruptRecord(f"task record cannot be decoded: field {exc} is missing") from exc
        except (ValueError, TypeError) as exc:
            raise CorruptRecord(f"task record cannot be decoded: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        """Build and type-check a record; raises ValueError, TypeError or KeyError when malformed."""
        opts = dict(_mapping(data["options"]))
        opts["after"] = _strs(opts.get("after", ()))
        for name, check in _OPTION_CHECKS.items():
            if name in opts:
                opts[name] = check(opts[name])
        options = TaskOptions(**opts)
        return cls(
            id=_str(data["id"]),
            spec_id=_str(data["spec_id"]),
            options=options,
            status=TaskStatus(data["status"]),
            created=_time(data.get("created", 0.0)),
            history=[
                StatusChange(
                    TaskStatus(_mapping(h)["status"]), _time(h["at"]), _str(h.get("note", ""))
                )
                for h in _list(data.get("history", []))
            ],
            name=_opt(data.get("name"), _str),
            argv=_strs(data.get("argv", ())),
            params={_str(k): _str(v) for k, v in _mapping(data.get("params", {})).items()},
            tags=_strs(data.get("tags", ())),
            agent=_opt(data.get("agent"), _str),
            gpu_ids=_strs(data.get("gpu_ids", ())),
            started=_opt(data.get("started"), _time),
            ended=_opt(data.get("ended"), _time),
            exit_code=_opt(data.get("exit_code"), _int),
            phase=Phase(_str(data["phase"])) if data.get("phase") else None,
            error=_opt(data.get("error"), _str),
            failure=FailureKind(_str(data["failure"])) if data.get("failure") else None,
            attempt=_int(data.get("attempt", 0)),
            retry_of=_opt(data.get("retry_of"), _str),
            clone_of=_opt(data.get("clone_of"), _str),
            sweep=_opt(data.get("sweep"), _sweep_id),
            note=_str(data.get("note", "")),
            notes=list(_strs(data.get("notes", []))),
            extra=_extra(data.get("extra", {})),
            metrics={
                _str(name): MetricSummary.from_dict(_mapping(summary))
                for name, summary in _mapping(data.get("metrics", {})).items()
            },
        )


T = TypeVar("T")


def _opt(value: Any, convert: Callable[[Any], T]) -> T | None:
    return None if value is None else convert(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _sweep_id(value: Any) -> str:
    """A sweep id: it names a Redis key (``keys.by_sweep``), so only the hex ids overnight makes."""
    text = _str(value)
    if len(text) != keys.ID_LENGTH or not keys.looks_like_id(text):
        raise ValueError(f"sweep id {text!r} is not {keys.ID_LENGTH} hex digits")
    return text


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list of strings, got {type(value).__name__}")
    return tuple(_str(v) for v in value)


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    """A finite JSON number (NaN and infinities would break every duration and date shown)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return float(value)


_LATEST_TIME = 32503680000.0  # year 3000: later stamps cannot be shown as dates


def _time(value: Any) -> float:
    """A unix time that can be shown as a date."""
    stamp = _number(value)
    if not 0 <= stamp < _LATEST_TIME:
        raise ValueError(f"time {stamp} is out of range")
    return stamp


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    seconds = _number(value)
    if not 0 <= seconds < _LATEST_TIME:
        raise ValueError(f"duration {seconds} is out of range")
    return seconds


def _extra(value: Any) -> dict[str, Any]:
    """The free-form ``extra`` object; the resource report in it is checked, because ``show``,
    ``summary`` and ``top`` compute with its numbers."""
    extra = dict(_mapping(value))
    resources = extra.get("resources")
    if resources is not None:
        report = _mapping(resources)
        for stats in _mapping(report.get("summary", {})).values():
            numbers = _mapping(stats)
            for name in ("peak", "mean"):
                _number(numbers[name])
            for number in numbers.values():
                _number(number)
        for why in _mapping(report.get("off", {})).values():
            _str(why)
        for points in _mapping(report.get("series", {})).values():
            _list(points)
    return extra


def _metrics_of(value: Mapping[str, Any]) -> dict[str, MetricSummary]:
    out = {}
    for name, summary in value.items():
        if not isinstance(summary, MetricSummary):
            raise TypeError(
                f"metric {name!r}: expected a MetricSummary, got {type(summary).__name__}"
            )
        out[_str(name)] = summary
    return out


def _opt_str(value: Any) -> str | None:
    return _opt(value, _str)


_OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    "queue": _str,
    "gpus": _int,
    "image": _opt_str,
    "timeout": _seconds,
    "retries": _int,
    "grace": _seconds,
    "expect": _seconds,
    "retry_on": lambda v: tuple(FailureKind(kind).value for kind in _strs(v)),
    "notify": _strs,
    "notify_metric": _opt_str,
}


_REQUIRED = frozenset({"id", "spec_id", "options", "status", "at"})


def _without_defaults(obj: Any) -> dict[str, Any]:
    out = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        if field.name in _REQUIRED or value != default:
            out[field.name] = value
    return out


def _enum_value(obj: object) -> object:
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"cannot encode {type(obj).__name__}")
