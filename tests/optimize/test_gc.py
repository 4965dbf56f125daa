"""gc of studies: real Optuna studies in the journal on the test Redis, their trials as tasks."""

from __future__ import annotations

import time

import optuna

from overnight.optimize import settings as stored
from overnight.optimize.driver import Driver
from overnight.optimize.gc import collect_studies
from overnight.optimize.lease import DriverLease
from overnight.optimize.settings import StudySettings
from overnight.queue import keys, replies
from overnight.queue.gc import GcReport, collect
from overnight.queue.records import Change, TaskStatus
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.studies import Lab, settings_for

DAY = 86400.0


def start(lab: Lab, name: str, **fields: object) -> tuple[StudySettings, list[str]]:
    """A study, made a day ago, with its first step's trials enqueued; returns their tasks."""
    settings = settings_for(name, "x=float:-6:6", parallel=2, created=time.time() - DAY, **fields)
    study = lab.storage.create(settings)
    stored.save(lab.store.redis, settings)
    snapshot = take_snapshot(lab.repo.path, ["python", "train.py"], SnapshotOptions())
    return settings, list(
        Driver(lab.store, settings, study, snapshot=snapshot).step().enqueued.values()
    )


def end(lab: Lab, task_ids: list[str]) -> None:
    for task_id in task_ids:
        lab.store.transition(task_id, TaskStatus.RUNNING, Change(agent="box"))
        lab.store.transition(task_id, TaskStatus.FINISHED, Change(exit_code=0))


def gc(lab: Lab, *, dry_run: bool = False) -> GcReport:
    """gc as it would run 10 s from now, of what is older than 5 s."""
    later = time.time() + 10
    report = collect(lab.store, older_than=5, now=later, dry_run=dry_run)
    return collect_studies(
        lab.store, report, redis_url=lab.redis_url, older_than=5, now=later, dry_run=dry_run
    )


def study_keys(lab: Lab, settings: StudySettings) -> list[bool]:
    client = lab.store.redis
    return [
        bool(client.exists(keys.study(settings.name))),
        bool(client.exists(keys.sweep_name(settings.name))),
        bool(client.sismember(keys.DETACHED_STUDIES, settings.name)),
    ]


def journal_keys(lab: Lab) -> list[str]:
    return sorted(replies.texts(lab.store.redis.keys(keys.OPTUNA_JOURNAL + "*")))


def in_journal(lab: Lab) -> list[str]:
    return sorted(optuna.get_all_study_names(storage=lab.storage.storage))


def test_a_study_whose_tasks_are_gone_goes_with_its_journal(lab: Lab) -> None:
    done, done_tasks = start(lab, "done", detached=True)
    live, live_tasks = start(lab, "live")
    end(lab, done_tasks)
    assert gc(lab, dry_run=True).studies == []  # its tasks are still there
    report = gc(lab)
    assert sorted(report.tasks) == sorted(done_tasks) and report.studies == ["done"]
    assert study_keys(lab, done) == [False, False, False]
    assert study_keys(lab, live) == [True, True, False]  # queued trials: kept
    assert in_journal(lab) == ["live"]  # Optuna's delete_study: another study is in the journal
    end(lab, live_tasks)
    assert gc(lab).studies == ["live"]
    assert study_keys(lab, live) == [False, False, False]
    assert journal_keys(lab) == []  # no study left in it: the journal went whole
    assert report.journal_kept == []


def test_a_study_with_a_driver_or_made_lately_is_kept(lab: Lab) -> None:
    held, tasks = start(lab, "held")
    end(lab, tasks)
    lease = DriverLease(lab.store.redis, "held", ttl=60)
    assert lease.take()
    new = settings_for("new", "x=float:-6:6", created=time.time() + 8)  # 2 s old for gc
    lab.storage.create(new)
    stored.save(lab.store.redis, new)  # its driver has not enqueued a trial yet
    report = gc(lab)
    assert report.tasks and report.studies == []
    assert study_keys(lab, held)[:2] == [True, True] and study_keys(lab, new)[:2] == [True, True]
    assert in_journal(lab) == ["held", "new"]
    lease.release()
    assert gc(lab).studies == ["held"]
    assert in_journal(lab) == ["new"]
