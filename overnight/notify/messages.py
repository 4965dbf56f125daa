"""What each notification says: a sweep's end, a task's failure, an agent lost, the digest.

Each :class:`Message` carries the ``key`` of its event: agents claim it in Redis before sending,
so an event is told once however many agents see it. Everything a task's enqueuer wrote (names,
errors, params) goes through :func:`overnight.terminal.visible`: one value stays one line.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence

from overnight.commands.leaderboard import MetricColumn, format_value
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.terminal import visible

MAX_LISTED = 10  # tasks named in one message; more are counted
CLAIM_TTL = 30 * 86400.0  # seconds an event's claim is kept: long past any retry of its tasks
AGENT_CLAIM_TTL = 3600.0  # an agent of the same name lost again an hour later is told again


@dataclasses.dataclass(frozen=True)
class Message:
    """One notification: its title, its text, the event it tells and the task it is about."""

    title: str
    text: str
    key: str  # the event: claimed once in Redis (``keys.notified``)
    task_id: str | None = None  # a failed delivery is noted on this task
    claim_ttl: float = CLAIM_TTL


def task_failed(record: TaskRecord) -> Message:
    what = record.failure.label if record.failure is not None else record.status.value
    where = f" in {record.phase.value}" if record.phase is not None else ""
    lines = [
        f"task {record.id} ({_label(record)}) {record.status.value}{where}: {what}",
        f"error: {visible(record.error or '-')}",
    ]
    if record.agent:
        lines.append(f"agent: {visible(record.agent)}")
    if record.sweep:
        lines.append(f"sweep: {record.sweep}")
    lines.append(f"overnight logs {record.id}")
    return Message(
        title=f"overnight: task {_label(record)} {record.status.value}",
        text="\n".join(lines),
        key=f"ended:{record.id}:{record.attempt}",
        task_id=record.id,
    )


def sweep_ended(sweep: str, records: Sequence[TaskRecord], metric: str | None) -> Message:
    """The sweep's counts by status and, with ``metric`` (``loss``, ``-acc:max``), its best run."""
    counts = collections.Counter(r.status.value for r in records)
    told = ", ".join(f"{n} {status}" for status, n in counts.most_common())
    lines = [f"sweep {sweep} ended: {len(records)} task(s): {told}"]
    best = best_run(records, metric) if metric else None
    if best is not None:
        record, label, value = best
        lines.append(f"best by {visible(label)}: {_who(record)} = {format_value(value)}")
    failed = [r for r in records if r.status in (TaskStatus.FAILED, TaskStatus.LOST)]
    lines += _listed(failed, _failure_line)
    lines.append(f"overnight summary --sweep {sweep}")
    return Message(
        title=f"overnight: sweep {sweep} ended ({told})",
        text="\n".join(lines),
        key=f"sweep:{sweep}:{len(records)}",  # a retry joins the sweep: its new end is told
        task_id=records[0].id if records else None,
    )


def best_run(records: Sequence[TaskRecord], metric: str) -> tuple[TaskRecord, str, float] | None:
    """The finished run with the lowest value of ``metric`` (``-NAME``: the highest); None when
    no finished run has it."""
    descending = metric.startswith("-")
    column = MetricColumn.parse(metric[1:] if descending else metric)
    scored = [
        (value, record)
        for record in records
        if record.status is TaskStatus.FINISHED
        for value in (column.value(record),)
        if value is not None
    ]
    if not scored:
        return None
    value, record = (max if descending else min)(scored, key=lambda pair: pair[0])
    return record, column.label, value


def agent_lost(agent: str, records: Sequence[TaskRecord]) -> Message:
    """An agent stopped answering; ``records`` are the tasks it held, now lost (or requeued)."""
    lines = [f"agent {visible(agent)} was lost; {len(records)} task(s) it ran:"]
    lines += _listed(records, lambda r: f"{r.id} ({_label(r)}) {r.status.value}")
    lines.append("overnight workers shows the agents that answer")
    return Message(
        title=f"overnight: agent {visible(agent)} lost",
        text="\n".join(lines),
        key=f"agent-lost:{agent}",
        task_id=records[0].id if records else None,
        claim_ttl=AGENT_CLAIM_TTL,
    )


def digest(slot: str, lines: Sequence[str]) -> Message:
    """The scheduled summary (``slot``: the schedule's time it is for, ``2026-12-07T07:00``)."""
    return Message(
        title=f"overnight: summary for {slot}",
        text="\n".join(lines),
        key=f"digest:{slot}",
    )


def _listed(records: Sequence[TaskRecord], line: Callable[[TaskRecord], str]) -> list[str]:
    """A line per task, indented, at most :data:`MAX_LISTED`; the rest counted."""
    lines = [f"  {line(record)}" for record in records[:MAX_LISTED]]
    if len(records) > MAX_LISTED:
        lines.append(f"  ... and {len(records) - MAX_LISTED} more")
    return lines


def _failure_line(record: TaskRecord) -> str:
    kind = f" [{record.failure.label}]" if record.failure is not None else ""
    return f"{record.status.value}{kind} {_who(record)}"


def _who(record: TaskRecord) -> str:
    """``ID name lr=0.1``: the task's id, its name if it has one, its params."""
    parts = [record.id, visible(record.name or ""), _params(record)]
    return " ".join(part for part in parts if part)


def _label(record: TaskRecord) -> str:
    return visible(record.name or " ".join(record.argv)[:60] or record.id)


def _params(record: TaskRecord) -> str:
    return visible(" ".join(f"{k}={v}" for k, v in record.params.items()))
