"""How tasks look on a terminal and in JSON: ``ls`` rows, ``show`` text, ``--json`` objects."""

from __future__ import annotations

import datetime as _dt
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from overnight.commands.common import to_jsonable
from overnight.commands.leaderboard import MetricColumn, format_value, metric_values, short_note
from overnight.errors import NotifyTargetError
from overnight.notify.targets import parse_target, redacted
from overnight.queue import keys, replies
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.recorder.requirements import without_credentials
from overnight.recorder.secrets import masked_env
from overnight.spec import TaskSpec
from overnight.units import format_duration

if TYPE_CHECKING:
    from overnight.queue.store import TaskStore

LS_HEADERS = ("ID", "TASK", "PARAMS", "STATUS", "QUEUE", "AGENT", "GPUS", "STARTED", "TIME", "EXIT")
_LABEL_WIDTH = 48


def when(stamp: float | None, *, now: float | None = None) -> str:
    """Local time: ``14:02`` today, ``05-01 14:02`` this year, else the date."""
    if stamp is None:
        return ""
    moment = _dt.datetime.fromtimestamp(stamp)
    today = _dt.datetime.fromtimestamp(time.time() if now is None else now)
    if moment.date() == today.date():
        return moment.strftime("%H:%M")
    if moment.year == today.year:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def duration(record: TaskRecord, *, now: float | None = None) -> float | None:
    """Run time: started to ended, or to now while it runs."""
    if record.started is None:
        return None
    end = record.ended if record.ended is not None else (time.time() if now is None else now)
    return max(0.0, end - record.started)


def label(record: TaskRecord) -> str:
    """The task's name, or its command."""
    text = record.name or shlex.join(record.argv)
    return text if len(text) <= _LABEL_WIDTH else text[: _LABEL_WIDTH - 1] + "…"


def params_text(params: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def ls_headers(columns: Sequence[MetricColumn] = (), *, note: bool = False) -> list[str]:
    """``ls``'s headers: :data:`LS_HEADERS` with a column per metric after PARAMS, and NOTE."""
    return [*LS_HEADERS[:3], *(c.label for c in columns), *LS_HEADERS[3:], *(["NOTE"] * note)]


def ls_row(
    record: TaskRecord,
    *,
    flagged: bool = False,
    columns: Sequence[MetricColumn] = (),
    note: bool = False,
) -> list[str]:
    """One ``ls`` row; ``flagged`` marks the status of a task no live agent could run (``!``)."""
    if record.status is TaskStatus.CORRUPT:
        shown = [record.id, "(record cannot be decoded)", "", *[""] * len(columns), "corrupt"]
        return [*shown, *[""] * (6 + note)]
    return [
        record.id,
        label(record),
        params_text(record.params),
        *(format_value(c.value(record)) for c in columns),
        record.status.value + (" !" if flagged else ""),
        record.options.queue,
        record.agent or "",
        ",".join(record.gpu_ids)
        if record.gpu_ids
        else (str(record.options.gpus) if record.options.gpus else ""),
        when(record.started),
        format_duration(duration(record)),
        "" if record.exit_code is None else str(record.exit_code),
        *([short_note(record.note)] * note),
    ]


def ls_table_row(record: TaskRecord, columns: Sequence[MetricColumn]) -> dict[str, Any]:
    """One ``ls --csv`` row: the table's columns, unformatted (times as unix seconds)."""
    return {
        "id": record.id,
        "task": label(record),
        "params": dict(record.params),
        "metrics": metric_values(record, columns),
        "status": record.status.value,
        "queue": record.options.queue,
        "agent": record.agent,
        "gpus": ",".join(record.gpu_ids),
        "started": record.started,
        "duration": duration(record),
        "exit_code": record.exit_code,
        "sweep": record.sweep,
        "note": record.note,
    }


def record_json(record: TaskRecord) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(record)
    data["duration"] = duration(record)
    if record.options.notify:  # webhook URLs are secrets: their host only
        data["options"]["notify"] = notify_shown(record.options.notify)
    return data


def notify_shown(targets: Sequence[str]) -> list[str]:
    """The task's notify targets as shown: a webhook's scheme and host, never its path."""
    shown = []
    for value in targets:
        try:
            shown.append(parse_target(value).shown)
        except NotifyTargetError:
            shown.append(redacted(value))
    return shown


def spec_json(spec: TaskSpec, *, show_secrets: bool = False) -> dict[str, Any]:
    """The spec as JSON; secret-looking env values masked (and requirement URLs stripped, for
    specs recorded before that was done) unless ``show_secrets``."""
    data: dict[str, Any] = spec.to_dict()
    if not show_secrets:
        data["env"] = masked_env(spec.env)
        data["requirements"]["text"] = without_credentials(spec.requirements.text)
    return data


def show_lines(record: TaskRecord, spec: TaskSpec | None, spec_problem: str | None) -> list[str]:
    """``overnight show``: what the task is, where it came from, and what happened to it."""
    rows: list[tuple[str, str]] = [("id", record.id)]
    if record.name:
        rows.append(("name", record.name))
    status = record.status.value
    if record.phase is not None:
        status += f" in {record.phase.value}"
    if record.failure is not None:
        status += f" ({record.failure.label})"
    rows.append(("status", status))
    if record.error:
        rows.append(("error", record.error))
    rows.append(("command", shlex.join(record.argv)))
    if record.params:
        rows.append(("params", params_text(record.params)))
    options = record.options
    rows.append(("queue", options.queue))
    extras = [f"gpus={options.gpus}"]
    if options.image:
        extras.append(f"image={options.image}")
    if options.timeout is not None:
        extras.append(f"timeout={format_duration(options.timeout)}")
    if options.expect is not None:
        extras.append(f"expect={format_duration(options.expect)}")
    if options.retries:
        kinds = ",".join(options.retry_on)
        extras.append(f"retries={options.retries} (run again after {kinds} failures)")
    rows.append(("options", " ".join(extras)))
    if options.notify:
        metric = f" (best by {options.notify_metric})" if options.notify_metric else ""
        rows.append(("notify", " ".join(notify_shown(options.notify)) + metric))
    if options.after:
        rows.append(("after", " ".join(options.after)))
    if spec is not None:
        repo = spec.repo
        rows.append(("repo", repo.url or "(no remote)"))
        rows.append(
            ("commit", repo.commit + (f" on {repo.branch}" if repo.branch else " (detached)"))
        )
        changes = [f"patch {spec.patch.size} B"] if spec.patch else []
        if spec.bundle:
            changes.append(f"bundle {spec.bundle.size} B")
        if spec.submodule_patches:
            size = sum(ref.size for ref in spec.submodule_patches.values())
            changes.append(f"{len(spec.submodule_patches)} submodule patch(es) {size} B")
        rows.append(("changes", ", ".join(changes) or "none"))
        rows.append(("python", spec.python))
        rows.append(
            (
                "requirements",
                f"{spec.requirements.source}, {len(spec.requirements.text.splitlines())} lines",
            )
        )
        note = record.note or spec.note
        if note:
            rows.append(("note", note))
        if record.tags:
            rows.append(("tags", " ".join(record.tags)))
        if spec.env:
            rows.append(("env", " ".join(sorted(spec.env))))
        if spec.metric_files:
            rows.append(("metrics from", " ".join(spec.metric_files)))
        rows.append(("recorded", f"{when(spec.created)} by {spec.user or '?'}@{spec.host or '?'}"))
    else:
        rows.append(("spec", f"unavailable: {spec_problem}"))
    if record.agent:
        rows.append(("agent", record.agent))
    if record.gpu_ids:
        rows.append(("gpus", ",".join(record.gpu_ids)))
    rows.append(("created", when(record.created)))
    if record.started is not None:
        rows.append(("started", when(record.started)))
    if record.ended is not None:
        rows.append(("ended", when(record.ended)))
    if record.started is not None:
        rows.append(("time", format_duration(duration(record))))
    if record.exit_code is not None:
        rows.append(("exit code", str(record.exit_code)))
    if record.attempt or options.retries:
        rows.append(("attempt", f"{record.attempt + 1} of {options.retries + 1}"))
    if record.retry_of:
        rows.append(("retry of", record.retry_of))
    if record.clone_of:
        rows.append(("clone of", record.clone_of))
    rows.extend(_run_rows(record.extra))
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k + ':':<{width}}{v}" for k, v in rows]
    lines.extend(_resources(record))
    lines.extend(metric_lines(record))
    if record.notes:
        lines.append("notes:")
        lines.extend(f"  {note}" for note in record.notes)
    lines.append("history:")
    for change in record.history:
        stamp = _dt.datetime.fromtimestamp(change.at).strftime("%Y-%m-%d %H:%M:%S")
        note = f"  {change.note}" if change.note else ""
        lines.append(f"  {stamp}  {change.status.value}{note}")
    return lines


def _run_rows(extra: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``ran on`` and ``environment`` rows from what the agent stored (hand-edited ones too)."""
    rows = []
    hardware = extra.get("hardware")
    if isinstance(hardware, Mapping):
        rows.append(("ran on", describe_hardware(hardware)))
    env = extra.get("environment")
    if isinstance(env, Mapping) and env.get("mode"):
        parts = [str(env["mode"])]
        if env.get("python"):
            parts.append(f"python {env['python']}")
        if env.get("key"):
            parts.append(f"key {str(env['key'])[:12]}")
        parts.append("built for this task" if env.get("built") else "from the cache")
        rows.append(("environment", ", ".join(parts)))
    return rows


def describe_hardware(info: Mapping[str, Any]) -> str:
    """One line for ``hardware_info()``: host, GPUs with driver and CUDA, CPU and RAM."""
    parts = [str(info.get("host") or "?")]
    count = info.get("gpu_count")
    if isinstance(count, int) and count > 0:
        gpus = info.get("gpus")
        listed = [g for g in gpus if isinstance(g, Mapping)] if isinstance(gpus, list) else []
        ids = [str(g.get("id")) for g in listed]
        model = str(info.get("gpu_model") or "GPU")
        one_kind = len({str(g.get("name")) for g in listed}) <= 1  # else the model counts them
        shown = f"{count}x {model}" if count > 1 and one_kind else model
        if ids:
            shown += f" (GPU {','.join(ids)})"
        versions = [
            f"{label} {info[key]}"
            for key, label in (("driver_version", "driver"), ("cuda_version", "CUDA"))
            if info.get(key)
        ]
        parts.append(", ".join([shown, *versions]))
    elif info.get("gpu_error"):
        parts.append(f"no GPU information ({info['gpu_error']})")
    cpu = str(info.get("cpu_model") or "unknown CPU")
    if isinstance(info.get("cpu_count"), int) and info["cpu_count"] > 0:
        cpu += f" ({info['cpu_count']} CPUs)"
    if isinstance(info.get("ram_gb"), (int, float)):
        cpu += f", {info['ram_gb']:g} GB RAM"
    parts.append(cpu)
    return "; ".join(parts)


def metric_lines(record: TaskRecord) -> list[str]:
    """``metrics:`` and a line per metric: ``loss  last 0.21 @ 900, min 0.2 @ 850, max 2.3 @ 0``
    (``@`` the step where the run gave one), names in order."""
    if not record.metrics:
        return []
    width = min(max(len(name) for name in record.metrics), 32) + 2
    lines = ["metrics:"]
    for name in sorted(record.metrics):
        m = record.metrics[name]
        parts = [
            f"last {_number(m.last)}{_at(m.last_step)}",
            f"min {_number(m.min)}{_at(m.min_step)}",
            f"max {_number(m.max)}{_at(m.max_step)}",
            f"{m.count} value{'s' if m.count != 1 else ''}",
        ]
        lines.append(f"  {name:<{width}}{', '.join(parts)}")
    return lines


def _number(value: float) -> str:
    return f"{value:.6g}"


def _at(step: float | None) -> str:
    return "" if step is None else f" @ {step:g}"


def _resources(record: TaskRecord) -> list[str]:
    report = record.extra.get("resources")
    if not isinstance(report, Mapping):
        return []
    from overnight.agent.run.monitor import describe_resources

    try:
        described = describe_resources(report)
    except (TypeError, ValueError, KeyError, AttributeError):  # written by hand or by a buggy agent
        return ["resources: (the report on this record cannot be read)"]
    return ["resources:", *(f"  {line}" for line in described)] if described else []


def wait_reason(store: TaskStore, record: TaskRecord) -> str | None:
    """Why an agent leaves this queued task for later (it would not fit its window), as the
    agent wrote it at ``keys.wait_reason`` (``show`` and the run page print it)."""
    if record.status is not TaskStatus.QUEUED:
        return None
    raw = replies.raw(store.redis.get(keys.wait_reason(record.id)))
    return raw.decode(errors="replace") if raw is not None else None
