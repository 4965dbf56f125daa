"""Runs made again from an ended or existing task: a retry (the same spec, linked to the first)
and a clone (a copy with params changed in its command). ``overnight retry``/``clone`` and the
web page's actions call these, so both make the same task."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from overnight.errors import InvalidTransition, UsageError
from overnight.queue.records import TaskOptions, TaskRecord
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from overnight.recorder.params import set_param


def new_options(record: TaskRecord, queue: str | None, gpus: int | None) -> TaskOptions:
    """The options of a retry or clone: the first task's, with no ``after``, queue and GPUs as
    given."""
    return dataclasses.replace(
        record.options,
        queue=queue or record.options.queue,
        gpus=record.options.gpus if gpus is None else gpus,
        after=(),
    )


def retry(
    store: TaskStore,
    record: TaskRecord,
    *,
    queue: str | None = None,
    gpus: int | None = None,
    resume: bool = False,
) -> TaskRecord:
    """Enqueue ``record``'s recorded spec again as a new task; the first one's notes say
    ``retried as NEW``. With ``resume`` the new task starts from ``record``'s stored outputs.
    Raises :class:`InvalidTransition` unless ``record`` has ended."""
    if not record.status.is_final:
        raise InvalidTransition(
            f"task {record.id} is {record.status.value}; retry an ended task "
            "(cancel this one first, or `overnight clone` it)"
        )
    sub = Submission(
        store.recorded_snapshot(record.id), new_options(record, queue, gpus), argv=record.argv,
        name=record.name, retry_of=record.id, note=record.note, tags=record.tags,
        sweep=record.sweep, outputs_of=record.id if resume else None,
    )  # fmt: skip
    new = submit_many(store, [sub])[0]
    store.add_note(record.id, f"retried as {new.id}")
    return new


def parse_setting(text: str, *, flag: str = "--set") -> tuple[str, str]:
    """``NAME=VALUE`` (a leading ``--`` dropped) -> (name, value); raises :class:`UsageError`."""
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("-")
    if not sep or not name:
        raise UsageError(f"invalid {flag} {text!r}: use NAME=VALUE, e.g. {flag} lr=0.003")
    return name, value


def clone(
    store: TaskStore,
    record: TaskRecord,
    changes: Sequence[tuple[str, str]],
    *,
    add_param: bool = False,
    note: str | None = None,
    tags: Sequence[str] = (),
    in_sweep: bool = False,
    queue: str | None = None,
    gpus: int | None = None,
) -> TaskRecord:
    """Enqueue a copy of ``record`` with each (name, value) of ``changes`` set in its command
    (a name the command lacks only with ``add_param``); ``note`` None keeps the task's."""
    argv = record.argv
    for name, value in changes:
        argv = set_param(argv, name, value, add=add_param)
    if in_sweep and record.sweep is None:
        raise UsageError(f"task {record.id} is in no sweep; clone it without --in-sweep")
    sub = Submission(
        store.recorded_snapshot(record.id),
        new_options(record, queue, gpus),
        argv=argv,
        name=record.name,
        clone_of=record.id,
        note=record.note if note is None else note,
        tags=tuple(dict.fromkeys((*record.tags, *tags))),
        sweep=record.sweep if in_sweep else None,
    )
    return submit_many(store, [sub])[0]
