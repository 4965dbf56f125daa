"""Garbage collection of studies: a study whose trials' tasks are all removed goes too.

Its settings, its name (``--sweep NAME``), its lease and its detached mark are deleted, and so is
the study in Optuna's Redis journal: the whole journal when it holds no other study (read here as
JSON, without Optuna), else through Optuna's ``delete_study`` where Optuna is installed (without
it the journal keeps the study, and says so). Kept: a study whose driver holds its lease, one with
any task left (queued, running, or not old enough for gc), and one created less than the
retention ago (its first driver may not have enqueued a trial yet).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import redis

from overnight.errors import OptimizeError
from overnight.optimize import settings as stored
from overnight.optimize.installed import optuna_installed
from overnight.optimize.settings import StudySettings
from overnight.queue import keys, replies

if TYPE_CHECKING:
    from overnight.queue.gc import GcReport
    from overnight.queue.store import TaskStore

_LOG_NUMBER = f"{keys.OPTUNA_JOURNAL}:log_number"
_SNAPSHOT = f"{keys.OPTUNA_JOURNAL}:snapshot"
_CHUNK = 1000
_CREATE_STUDY, _DELETE_STUDY = 0, 1  # Optuna's JournalOperation codes


def _log(number: int) -> str:
    return f"{keys.OPTUNA_JOURNAL}:log:{number}"


def collect_studies(
    store: TaskStore,
    report: GcReport,
    *,
    redis_url: str,
    older_than: float,
    dry_run: bool = False,
    now: float | None = None,
) -> GcReport:
    """Remove the studies with no task, no driver and created ``older_than`` s ago; their names
    go in ``report.studies`` (and ``report.journal_kept``, those Optuna's journal keeps)."""
    cutoff = (time.time() if now is None else now) - older_than
    client = store.redis
    doomed: list[StudySettings] = []
    for key in client.scan_iter(match=keys.study("*"), count=500):
        name = replies.text(key)[len(keys.study("")) :]
        try:
            settings = stored.load(client, name)
        except OptimizeError:  # unreadable settings: left for a person to look at
            continue
        if settings.created < cutoff and not _in_use(client, settings):
            doomed.append(settings)
    report.studies.extend(s.name for s in doomed)
    if dry_run or not doomed:
        return report
    with client.pipeline(transaction=True) as pipe:
        for settings in doomed:
            pipe.delete(
                keys.study(settings.name),
                keys.study_lease(settings.name),
                keys.sweep_name(settings.name),
            )
            pipe.srem(keys.DETACHED_STUDIES, settings.name)
        pipe.execute()
    in_journal = {s.name for s in doomed if s.journal}
    if in_journal:
        report.journal_kept.extend(sorted(_remove_from_journal(client, redis_url, in_journal)))
    return report


def _in_use(client: redis.Redis, settings: StudySettings) -> bool:
    """A driver holds the study, or a task of it is left."""
    if client.exists(keys.study_lease(settings.name)):
        return True
    return bool(client.zcard(keys.by_sweep(settings.sweep)))


def _remove_from_journal(client: redis.Redis, redis_url: str, names: Collection[str]) -> set[str]:
    """Remove the studies ``names`` from Optuna's journal; returns those it keeps."""
    with client.pipeline(transaction=True) as pipe:
        try:
            replies.watch(pipe, _LOG_NUMBER)  # a study created meanwhile keeps the journal
            top, held = _journal_studies(pipe)
            if held is not None and held <= set(names):
                pipe.multi()
                pipe.delete(_LOG_NUMBER, _SNAPSHOT)
                for start in range(0, top + 1, _CHUNK):
                    pipe.delete(*(_log(i) for i in range(start, min(top + 1, start + _CHUNK))))
                pipe.execute()
                return set()
        except redis.WatchError:
            held = None
    wanted = set(names) if held is None else set(names) & held
    if not wanted or not optuna_installed():
        return wanted
    import optuna

    from overnight.optimize.storage import StudyStorage

    with StudyStorage(redis_url) as storage:
        for name in sorted(wanted):
            with contextlib.suppress(KeyError):  # not there (any more)
                optuna.delete_study(study_name=name, storage=storage.storage)
    return set()


def _journal_studies(client: Any) -> tuple[int, set[str] | None]:
    """The journal's last log number and the names of the studies it holds, replayed as Optuna
    does (None when a log cannot be read: then it is not removed whole)."""
    raw = replies.raw(client.get(_LOG_NUMBER))
    if raw is None:
        return -1, set()
    try:
        top = int(raw)
    except ValueError:
        return -1, None
    studies: dict[int, str] = {}
    next_id = 0
    for start in range(0, top + 1, _CHUNK):
        for entry in client.mget([_log(i) for i in range(start, min(top + 1, start + _CHUNK))]):
            try:
                log = json.loads(entry)
            except (TypeError, ValueError):
                return top, None
            if not isinstance(log, dict):
                return top, None
            op = log.get("op_code")
            if op == _CREATE_STUDY and log.get("study_name") not in studies.values():
                studies[next_id] = str(log.get("study_name"))
                next_id += 1
            elif op == _DELETE_STUDY:
                studies.pop(log.get("study_id"), None)  # type: ignore[arg-type]
    return top, set(studies.values())
