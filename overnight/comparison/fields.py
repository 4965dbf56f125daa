"""What runs are besides their code, side by side: one :class:`Row` per field, a value per run.

Values are the text shown for each run ("" where a run has none); a row is *changed* when the
runs' values differ. Env variables are compared by name only: their values may be secrets.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from overnight.metrics.summary import MetricSummary
from overnight.queue.records import TaskRecord
from overnight.spec import TaskSpec
from overnight.units import format_bytes, format_duration


@dataclasses.dataclass(frozen=True)
class Run:
    """One run to compare: its record and the spec it ran (its argv and params set)."""

    record: TaskRecord
    spec: TaskSpec


@dataclasses.dataclass(frozen=True)
class Row:
    """One field of the comparison: its section, its name, and its value in each run."""

    section: str  # "run", "params", "code", "environment", "hardware", "result", "metrics"
    field: str
    values: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return len(set(self.values)) > 1


def rows(runs: Sequence[Run]) -> list[Row]:
    """Every field of ``runs``, section by section, in a fixed order."""
    out: list[Row] = []

    def add(section: str, field: str, value: Callable[[Run], str]) -> None:
        out.append(Row(section, field, tuple(value(run) for run in runs)))

    add("run", "name", lambda r: r.record.name or "")
    add("run", "command", lambda r: shlex.join(r.record.argv))
    add("run", "note", lambda r: r.spec.note)
    add("run", "tags", lambda r: " ".join(r.spec.tags))
    add("run", "queue", lambda r: r.record.options.queue)
    for name in _union(r.record.params for r in runs):
        add("params", name, _param(name))
    add("code", "commit", _commit)
    add("code", "changes", _changes)
    add("environment", "python", lambda r: r.spec.python)
    add("environment", "requirements", _requirements)
    add("environment", "env", lambda r: " ".join(sorted(r.spec.env)))
    add("environment", "image", lambda r: r.record.options.image or "")
    add("hardware", "host", lambda r: _hardware(r, "host"))
    add("hardware", "gpu", _gpus)
    add("hardware", "driver", lambda r: _hardware(r, "driver_version"))
    add("hardware", "cuda", lambda r: _hardware(r, "cuda_version"))
    add("result", "status", lambda r: r.record.status.value)
    add("result", "duration", _duration)
    add("result", "exit code", lambda r: _text(r.record.exit_code))
    add("result", "attempt", lambda r: str(r.record.attempt + 1))
    for name in _union(r.record.metrics for r in runs):
        for part in ("last", "min", "max"):
            add("metrics", f"{name} {part}", _metric(name, part))
    return out


def _union(mappings: Any) -> list[str]:
    """The keys of ``mappings`` in first-seen order."""
    return list(dict.fromkeys(key for mapping in mappings for key in mapping))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _commit(run: Run) -> str:
    repo = run.spec.repo
    return repo.commit[:12] + (f" on {repo.branch}" if repo.branch else " (detached)")


def _changes(run: Run) -> str:
    spec = run.spec
    parts = [f"patch {format_bytes(spec.patch.size)}"] if spec.patch else []
    if spec.bundle:
        parts.append(f"bundle {format_bytes(spec.bundle.size)}")
    for path in sorted(spec.submodule_patches):
        parts.append(f"submodule {path} {spec.submodule_patches[path].sha256[:12]}")
    return ", ".join(parts) or "none"


def _requirements(run: Run) -> str:
    reqs = run.spec.requirements
    source = reqs.path or reqs.source
    count = len(reqs.text.splitlines())
    return f"{source}, {count} line{'' if count == 1 else 's'}" if reqs.text else source


def _hardware(run: Run, key: str) -> str:
    hardware = run.record.extra.get("hardware")
    if not isinstance(hardware, Mapping):
        return ""
    return _text(hardware.get(key))


def _gpus(run: Run) -> str:
    """``2x NVIDIA H200`` for the GPUs the run had; empty for none."""
    hardware = run.record.extra.get("hardware")
    if not isinstance(hardware, Mapping):
        return ""
    count, model = hardware.get("gpu_count"), hardware.get("gpu_model")
    if not isinstance(count, int) or count < 1:
        return ""
    shown = str(model or "GPU")
    return f"{count}x {shown}" if count > 1 and "x " not in shown else shown


def _duration(run: Run) -> str:
    record = run.record
    if record.started is None or record.ended is None:
        return ""
    return format_duration(max(0.0, record.ended - record.started))


def _param(name: str) -> Callable[[Run], str]:
    return lambda run: run.record.params.get(name, "")


def _metric(name: str, part: str) -> Callable[[Run], str]:
    """The ``part`` (last, min or max) of metric ``name``, with its step: ``0.25 @ 900``."""

    def value(run: Run) -> str:
        summary: MetricSummary | None = run.record.metrics.get(name)
        if summary is None:
            return ""
        number: float = getattr(summary, part)
        step: float | None = getattr(summary, f"{part}_step")
        return f"{number:g}" + (f" @ {step:g}" if step is not None else "")

    return value
