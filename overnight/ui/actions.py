"""What the page's buttons do: cancel, retry and clone, through the same functions as
``overnight cancel``/``retry``/``clone``; each returns the line the result page shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from overnight.errors import OvernightError, UsageError
from overnight.queue.cancel import request_cancel
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.resubmit import clone, retry
from overnight.queue.store import TaskStore

ACTIONS = ("cancel", "retry", "clone")


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


def changed_params(record: TaskRecord, form: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (name, value) of each ``param.NAME`` field whose value differs from the task's."""
    out = []
    for key, value in form.items():
        if key.startswith("param."):
            name = key[len("param.") :]
            if name in record.params and value != record.params[name]:
                out.append((name, value))
    return out
