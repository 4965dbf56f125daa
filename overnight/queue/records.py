"""Task records: what Redis holds about each task besides its spec, and the status model."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from typing import Any

from overnight.errors import CorruptRecord


class TaskStatus(str, enum.Enum):
    """Where a task is in its life. ``finished`` means exit code 0."""

    QUEUED = "queued"
    WAITING = "waiting"  # waits for another task (--after)
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


class Phase(str, enum.Enum):
    """The step a failure happened in."""

    SUBMIT = "submit"
    WORKSPACE = "workspace"
    ENVIRONMENT = "environment"
    RUN = "run"
    AGENT = "agent"


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


@dataclasses.dataclass(frozen=True)
class StatusChange:
    status: TaskStatus
    at: float
    note: str = ""


@dataclasses.dataclass
class TaskRecord:
    """One task as stored in Redis; the spec is stored beside it (``spec_key``)."""

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
    attempt: int = 0
    retry_of: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # hardware, resource peaks...

    def to_json(self) -> str:
        """Compact JSON: fields at their default value are left out (``from_dict`` restores them),
        which keeps a finished task's record small in Redis."""
        data = _without_defaults(self)
        data["options"] = _without_defaults(self.options)
        data["history"] = [_without_defaults(h) for h in self.history]
        return json.dumps(data, separators=(",", ":"), default=_enum_value)

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskRecord:
        try:
            data = json.loads(text)
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptRecord(f"task record cannot be decoded: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        opts = dict(data["options"])
        opts["after"] = tuple(opts.get("after", ()))
        return cls(
            id=str(data["id"]),
            spec_id=str(data["spec_id"]),
            options=TaskOptions(**opts),
            status=TaskStatus(data["status"]),
            created=float(data.get("created", 0.0)),
            history=[
                StatusChange(TaskStatus(h["status"]), float(h["at"]), h.get("note", ""))
                for h in data.get("history", [])
            ],
            name=data.get("name"),
            argv=tuple(data.get("argv", ())),
            params=dict(data.get("params", {})),
            tags=tuple(data.get("tags", ())),
            agent=data.get("agent"),
            gpu_ids=tuple(data.get("gpu_ids", ())),
            started=data.get("started"),
            ended=data.get("ended"),
            exit_code=data.get("exit_code"),
            phase=Phase(data["phase"]) if data.get("phase") else None,
            error=data.get("error"),
            attempt=int(data.get("attempt", 0)),
            retry_of=data.get("retry_of"),
            notes=list(data.get("notes", [])),
            extra=dict(data.get("extra", {})),
        )


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
