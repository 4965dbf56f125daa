"""What the page's buttons do: cancel, retry, clone, and the queue order's bump, hold, release
and move, through the same functions as ``overnight cancel``/``retry``/``clone`` and
``overnight bump``/``hold``/``release``/``move`` (:mod:`overnight.queue.order`); each returns the
line the result page shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from overnight.errors import OvernightError, UsageError
from overnight.queue import order
from overnight.queue.cancel import request_cancel
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.resubmit import clone, retry
from overnight.queue.store import TaskStore

ORDER_ACTIONS = {
    "bump": (order.bump, "bumped"),
    "hold": (order.hold, "held"),
    "release": (order.release, "released"),
}
"""The order changes of one task that need nothing more than it: the change and its past tense."""
QUEUE_ACTIONS = (*ORDER_ACTIONS, "move")
ACTIONS = ("cancel", "retry", "clone", *QUEUE_ACTIONS)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an action did: one line, whether it worked, and the task it made (retry, clone)."""

    message: str
    ok: bool = True
    new_id: str | None = None


def cancel_task(store: TaskStore, task_id: str) -> Outcome:
    try:
        record = request_cancel(store, task_id)
    except OvernightError as exc:
        return Outcome(str(exc), ok=False)
    if record.status is TaskStatus.CANCELED:
        return Outcome(f"{record.id} canceled")
    where = f" on {record.agent}" if record.agent else ""
    return Outcome(f"{record.id} is {record.status.value}{where}: asked its agent to stop it")


def retry_task(store: TaskStore, task_id: str) -> Outcome:
    try:
        new = retry(store, store.get(task_id))
    except OvernightError as exc:
        return Outcome(str(exc), ok=False)
    return Outcome(f"queued {new.id}, a retry of {task_id}, on {new.options.queue}", new_id=new.id)


def clone_task(store: TaskStore, task_id: str, form: Mapping[str, str]) -> Outcome:
    """Clone with the form's values: ``param.NAME`` fields (changed ones are set in the
    command), ``note``, ``tags`` (space-separated, added), ``queue`` and ``gpus``."""
    try:
        record = store.get(task_id)
        changes = changed_params(record, form)
        gpus_text = form.get("gpus", "").strip()
        try:
            gpus = int(gpus_text) if gpus_text else None
        except ValueError:
            raise UsageError(f"GPUs must be a whole number, not {gpus_text!r}") from None
        new = clone(
            store,
            record,
            changes,
            note=form.get("note", record.note),
            tags=form.get("tags", "").split(),
            queue=form.get("queue", "").strip() or None,
            gpus=gpus,
        )
    except OvernightError as exc:
        return Outcome(str(exc), ok=False)
    shown = ", ".join(f"{k}={v}" for k, v in changes) or "no param changed"
    return Outcome(f"queued {new.id}, a clone of {task_id} ({shown})", new_id=new.id)


def order_task(store: TaskStore, action: str, task_id: str, form: Mapping[str, str]) -> Outcome:
    """Bump, hold, release or move (to the form's ``queue``, at its front with ``front=yes``)
    one task, and say where it stands now."""
    try:
        selection = order.Selection(ids=(task_id,))
        if action == "move":
            queue = form.get("queue", "").strip()
            if not queue:
                raise UsageError("name the queue to move the task to")
            done = f"moved to {queue}"
            result = order.move(store, selection, queue, at_front=form.get("front") == "yes")
        else:
            change, done = ORDER_ACTIONS[action]
            result = change(store, selection)
        if result.skipped:
            return Outcome(f"{task_id} not {done}: {result.skipped[0][1]}", ok=False)
        record = store.get(task_id)
        if not result.changed:
            return Outcome(
                f"{task_id} not {done}: it is on {record.options.queue} already", ok=False
            )
    except OvernightError as exc:
        return Outcome(str(exc), ok=False)
    return Outcome(f"{task_id} {done}; {standing(store, record)}")


def standing(store: TaskStore, record: TaskRecord) -> str:
    """Where a task stands in its queue: ``3rd of 5 in gpu``, ``held on gpu``, or its status."""
    queue = record.options.queue
    if record.status is TaskStatus.QUEUED:
        ids = order.queue_order(store, queue)
        if record.id in ids:
            return f"{ordinal(ids.index(record.id) + 1)} of {len(ids)} in {queue}"
    if record.status is TaskStatus.HELD:
        return f"held on {queue} until released"
    return f"{record.status.value} on {queue}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def changed_params(record: TaskRecord, form: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (name, value) of each ``param.NAME`` field whose value differs from the task's."""
    out = []
    for key, value in form.items():
        if key.startswith("param."):
            name = key[len("param.") :]
            if name in record.params and value != record.params[name]:
                out.append((name, value))
    return out
