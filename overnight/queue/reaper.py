"""Lost tasks: a preparing or running task whose heartbeat expired lost its agent.

Every agent heartbeats its tasks (a key with a TTL). Any process may reap: the ``overnight``
commands that open the store do, so do agents and ``Client.reap``, so a dead agent's tasks are
noticed without waiting for RQ's maintenance. Reaping costs one read of the small active sets and
one EXISTS per active task.

A Redis that restarts after an outage longer than a heartbeat's lifetime comes back with every
heartbeat expired: for ``settle`` seconds after its start nothing is reaped, so agents reconnect
and renew them first.

An agent restarted under its name (after a SIGKILL, an OOM kill, a reboot) does not wait for
its earlier run's heartbeats to expire: at start it marks that run's tasks lost at once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import redis

from overnight.errors import CorruptRecord, InvalidTransition, TaskNotFound
from overnight.queue import keys
from overnight.queue.failures import FailureKind, retried
from overnight.queue.records import ACTIVE_STATUSES, Change, Phase, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

REAP_SETTLE = 60.0
"""Seconds a restarted Redis is left to agents before silent tasks count as lost: a heartbeat's
lifetime (30 s) and an agent's longest wait between reconnect attempts (30 s)."""


def reap_lost(store: TaskStore, settle: float | None = None) -> list[str]:
    """Mark tasks without a heartbeat ``lost``; requeue those with retries left. Returns their ids.

    Nothing is reaped while Redis has been up for less than ``settle`` seconds: heartbeats that
    expired while it was down say nothing of their agents, which need that long to be back.
    ``settle`` defaults to :data:`REAP_SETTLE`.
    """
    settle = REAP_SETTLE if settle is None else settle
    ids = store.index.ids(ACTIVE_STATUSES)
    if not ids:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.exists(keys.heartbeat(task_id))
    silent = [task_id for task_id, alive in zip(ids, pipe.execute(), strict=True) if not alive]
    if not silent or not _settled(store, settle):
        return []
    lost = []
    for task_id in silent:
        try:
            record = store.get(task_id)
        except (TaskNotFound, CorruptRecord):
            continue
        agent = f"agent {record.agent}" if record.agent else "its agent"
        if _lose(
            store,
            record,
            note=f"{agent} stopped sending heartbeats",
            error=f"{agent} vanished while the task was {record.status.value}",
            why=f"after {agent} vanished",
            only_if_silent=True,
        ):
            lost.append(task_id)
    return lost


def _settled(store: TaskStore, settle: float) -> bool:
    """Whether Redis has been up ``settle`` seconds (True where INFO is not allowed)."""
    if settle <= 0:
        return True
    try:
        uptime = store.redis.info("server").get("uptime_in_seconds")
    except redis.ResponseError:  # a managed Redis that hides INFO: no way to tell
        return True
    return uptime is None or float(uptime) >= settle


def reap_restarted(store: TaskStore, agent: str, keep: Collection[str] = ()) -> list[str]:
    """Mark ``lost`` (requeued as retries allow) the preparing and running tasks of ``agent``
    but those in ``keep``, at once: called by an agent of that name at its start, once
    registered, when no other agent of the name runs, so its earlier run died and its tasks'
    heartbeats, still alive, say nothing. Returns their ids."""
    held = {task_id: agent for task_id in store.index.ids(ACTIVE_STATUSES) if task_id not in keep}
    return _lose_held(store, held, "agent {agent} restarted while the task was {status}")


def reap_orphaned(store: TaskStore, orphans: Mapping[str, str]) -> list[str]:
    """Mark ``lost`` at once (requeued as retries allow) each task of ``orphans`` (task id ->
    agent) that agent still holds: the agent's process is gone from the host where the
    task's process was found. Returns their ids."""
    return _lose_held(
        store,
        orphans,
        "agent {agent} died while the task was {status}, leaving its process running",
    )


def _lose_held(store: TaskStore, held: Mapping[str, str], note: str) -> list[str]:
    """Lose each task (id -> agent) that its agent, known dead, still holds; ``note`` is
    formatted with ``agent`` and ``status``."""
    lost = []
    for task_id, agent in held.items():
        try:
            record = store.get(task_id)
        except (TaskNotFound, CorruptRecord):
            continue
        status = record.status.value
        if record.agent == agent and _lose(
            store,
            record,
            note=note.format(agent=agent, status=status),
            error=f"agent {agent} died while the task was {status}",
            why=f"after agent {agent} died",
            held_by=agent,
        ):
            lost.append(task_id)
    return lost


def _lose(
    store: TaskStore,
    record: TaskRecord,
    *,
    note: str,
    error: str,
    why: str,
    only_if_silent: bool = False,
    held_by: str | None = None,
) -> bool:
    """Mark the task lost and requeue it at the front of its queue if it has retries left;
    False when it moved on.

    A task whose cancel was requested (its agent vanished before it could stop it) is canceled
    instead, and never requeued.
    """
    if store.cancel_requested(record.id):
        status, retry = TaskStatus.CANCELED, False
        note, error = f"{note}; canceled as requested, not run again", ""
    else:
        options = record.options
        status = TaskStatus.LOST
        retry = retried(FailureKind.INFRA, options.retry_on, record.attempt, options.retries)
    try:
        record = store.transition(
            record.id,
            status,
            Change(
                phase=Phase.AGENT,
                error=error or None,
                failure=FailureKind.INFRA if status is TaskStatus.LOST else None,
            ),
            note=note,
            expect=ACTIVE_STATUSES,
            only_if_silent=only_if_silent,
            held_by=held_by,
            release=not retry,
        )
    except InvalidTransition:
        return False  # it heartbeated, ended or changed hands meanwhile, or was reaped
    if status is TaskStatus.LOST:
        store.redis.sadd(keys.UNTOLD, f"lost:{record.id}")  # agents tell of its agent
    if retry:  # at the front: it waited its turn once already
        store.requeue(
            record.id,
            note=f"attempt {record.attempt + 2} of {record.options.retries + 1}, {why}",
            new_attempt=True,
            at_front=True,
        )
    return True
