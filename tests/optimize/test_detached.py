"""Detached studies as agents drive them: one driver at a time, a lapsed lease taken over."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState

from overnight.optimize import settings as stored
from overnight.optimize.detached import DetachedDrivers
from overnight.optimize.driver import Driver
from overnight.optimize.lease import DriverLease
from overnight.queue import keys
from overnight.queue.index import Query
from overnight.queue.records import TaskStatus
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import wait_status
from tests.fixtures.studies import Lab, settings_for, stop_all

pytestmark = pytest.mark.slow


def test_a_lapsed_lease_is_taken_over_and_no_trial_enqueued_twice(lab: Lab) -> None:
    settings = settings_for("det", "x=float:-6:6", trials=6, parallel=2, detached=True)
    study = lab.storage.create(settings)
    stored.save(lab.store.redis, settings)
    snapshot = take_snapshot(lab.repo.path, ["python", "train.py"], SnapshotOptions())
    Driver(lab.store, settings, study, snapshot=snapshot).step()  # what `--detach` does first
    first = DetachedDrivers(lab.store, lab.redis_url, "agent-a", ttl=0.3)
    second = DetachedDrivers(lab.store, lab.redis_url, "agent-b", ttl=0.3)
    try:
        first.tick()
        second.tick()  # agent-a holds the lease: agent-b waits
        assert DriverLease(lab.store.redis, "det").holder() == "agent-a"
        time.sleep(0.45)  # agent-a stalls (killed): its lease lapses
        second.tick()
        assert DriverLease(lab.store.redis, "det").holder() == "agent-b"
        first.tick()
        assert DriverLease(lab.store.redis, "det").holder() == "agent-b"
    finally:
        first.close()
        second.close()
    tasks = lab.store.find(Query(sweep=settings.sweep, limit=None))
    assert len(tasks) == 2  # the two in flight, found again from their tasks
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 2 and lab.store.redis.sismember(keys.DETACHED_STUDIES, "det")


def test_a_study_taken_back_by_a_laptop_is_left_alone(lab: Lab) -> None:
    settings = settings_for("back", "x=float:-6:6", trials=2, parallel=1, detached=True)
    study = lab.storage.create(settings)
    stored.save(lab.store.redis, settings)
    snapshot = take_snapshot(lab.repo.path, ["python", "train.py"], SnapshotOptions())
    Driver(lab.store, settings, study, snapshot=snapshot).step()
    agent = DetachedDrivers(lab.store, lab.redis_url, "agent-a", ttl=30)
    try:
        agent.tick()
        assert DriverLease(lab.store.redis, "back").holder() == "agent-a"
        stored.save(lab.store.redis, settings_for("back", "x=float:-6:6", sweep=settings.sweep))
        agent.tick()  # `--resume back` without --detach: the lease is handed back at once
        assert DriverLease(lab.store.redis, "back").holder() is None
    finally:
        agent.close()


def test_a_study_whose_metric_no_run_reports_is_stopped(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        "nomet", "x=float:-6:6", metric="val_loss", trials=9, parallel=3, detached=True
    )
    study = lab.storage.create(settings)
    stored.save(lab.store.redis, settings)
    snapshot = take_snapshot(lab.repo.path, ["python", "train.py"], SnapshotOptions())
    enqueued = Driver(lab.store, settings, study, snapshot=snapshot).step().enqueued
    agents = lab.agents()
    try:
        for task_id in enqueued.values():
            wait_status(lab.store, task_id, TaskStatus.FINISHED)
    finally:
        stop_all(agents)
    agent = DetachedDrivers(lab.store, lab.redis_url, "agent-a", ttl=30)
    try:
        agent.tick()
    finally:
        agent.close()
    assert "first 3 trials ended with no val_loss (their runs reported: loss)" in caplog.text
    assert not lab.store.redis.sismember(keys.DETACHED_STUDIES, "nomet")
    assert DriverLease(lab.store.redis, "nomet").holder() is None
    assert len(lab.store.find(Query(sweep=settings.sweep, limit=None))) == 3  # no new trial
