"""The driver against a real Optuna study on the test Redis, trials run by real agents."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from overnight.errors import MetricNeverReported
from overnight.optimize.driver import (
    FIRST_WITHOUT_METRIC,
    REASON_ATTR,
    TASK_ATTR,
    Driver,
    StepReport,
)
from overnight.optimize.settings import StudySettings
from overnight.queue.index import Query
from overnight.queue.records import Change, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot
from tests.fixtures.agents import wait_status
from tests.fixtures.gitrepo import Repo
from tests.fixtures.studies import Lab, settings_for, stop_all

pytestmark = pytest.mark.slow


def snapshot(repo: Repo, *args: str) -> Snapshot:
    return take_snapshot(repo.path, ["python", "train.py", *args], SnapshotOptions())


def drive(driver: Driver, timeout: float = 90.0) -> list[StepReport]:
    reports = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reports.append(driver.step())
        if reports[-1].done:
            return reports
        time.sleep(0.1)
    pytest.fail("the study did not finish in time")


def most_in_flight(records: list[TaskRecord]) -> int:
    """The most tasks that were queued or running at once, from their records."""
    events = []
    for record in records:
        assert record.ended is not None
        events += [(record.created, 1), (record.ended, -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same moment
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def sweep_tasks(store: TaskStore, settings: StudySettings) -> list[TaskRecord]:
    return store.find(Query(sweep=settings.sweep, limit=None))


def test_the_search_finds_the_minimum_never_over_parallel(lab: Lab) -> None:
    store, storage = lab.store, lab.storage
    settings = settings_for("quad", "x=float:-6:6", trials=14, parallel=3, seed=3)
    study = storage.create(settings)
    agents = lab.agents()
    try:
        reports = drive(Driver(store, settings, study, snapshot=snapshot(lab.repo)))
    finally:
        stop_all(agents)
    assert max(r.in_flight for r in reports) <= 3
    trials = study.get_trials()
    assert len(trials) == 14 and all(t.state is TrialState.COMPLETE for t in trials)
    assert abs(study.best_params["x"] - 2) < 1.2, study.best_params
    assert study.best_value < sorted(t.value for t in trials if t.value is not None)[7]
    records = sweep_tasks(store, settings)
    assert len(records) == 14 and most_in_flight(records) <= 3
    by_id = {r.id: r for r in records}
    for trial in trials:
        record = by_id[trial.user_attrs[TASK_ATTR]]
        assert f"trial:{trial.number}" in record.tags and "study:quad" in record.tags
        assert float(record.params["x"]) == trial.params["x"]  # set in the command
        assert record.metrics["loss"].last == trial.value


def test_a_trial_is_enqueued_as_soon_as_one_ends(lab: Lab) -> None:
    store, storage = lab.store, lab.storage
    settings = settings_for("nobarrier", "sleep=choice:0,4", trials=3, parallel=2)
    study = storage.create(settings)
    for sleep in ("4", "0", "0"):
        study.enqueue_trial({"sleep": sleep})
    agents = lab.agents()
    try:
        drive(Driver(store, settings, study, snapshot=snapshot(lab.repo)))
    finally:
        stop_all(agents)
    tasks = {t.number: store.get(t.user_attrs[TASK_ATTR]) for t in study.get_trials()}
    slow_end = tasks[0].ended
    assert slow_end is not None and tasks[2].created < slow_end  # no batch barrier
    assert tasks[0].params["sleep"] == "4"


def test_failed_and_silent_trials_are_told_failed_with_the_reason(lab: Lab) -> None:
    store, storage = lab.store, lab.storage
    settings = settings_for(
        "modes", "mode=choice:ok,fail,silent", trials=3, parallel=3, sampler="grid"
    )
    study = storage.create(settings)
    agents = lab.agents()
    try:
        drive(Driver(store, settings, study, snapshot=snapshot(lab.repo, "--x", "1")))
    finally:
        stop_all(agents)
    by_mode = {t.params["mode"]: t for t in study.get_trials()}
    assert by_mode["ok"].state is TrialState.COMPLETE
    assert by_mode["fail"].state is TrialState.FAIL
    assert "ended failed" in by_mode["fail"].user_attrs[REASON_ATTR]
    silent = by_mode["silent"]
    assert silent.state is TrialState.FAIL
    assert "printed no loss" in silent.user_attrs[REASON_ATTR]
    record = store.get(silent.user_attrs[TASK_ATTR])
    assert record.status is TaskStatus.FINISHED
    assert any("printed no loss" in note for note in record.notes)


def test_a_restarted_driver_goes_on_from_the_tasks(lab: Lab) -> None:
    store, storage = lab.store, lab.storage
    settings = settings_for("restart", "x=float:-6:6", trials=6, parallel=2)
    study = storage.create(settings)
    first = Driver(store, settings, study, snapshot=snapshot(lab.repo, "--sleep", "0.5"))
    assert len(first.step().enqueued) == 2
    # The driver stops between asking for a trial and enqueuing its task.
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(-6, 6)})
    del first
    agents = lab.agents()
    try:
        # A new driver, a new study object, no snapshot given: all from Redis.
        again = Driver(store, settings, storage.load(settings))
        reports = drive(again)
    finally:
        stop_all(agents)
    assert orphan.number in reports[0].enqueued
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state is TrialState.COMPLETE for t in trials)
    records = sweep_tasks(store, settings)
    assert sorted(r.tags[-1] for r in records) == sorted(f"trial:{n}" for n in range(6))
    assert most_in_flight(records) <= 3  # the two in flight and the orphan's


def test_trials_the_pruner_prunes_are_canceled(lab: Lab) -> None:
    store, storage = lab.store, lab.storage
    settings = settings_for("prune", "x=choice:8,9", trials=7, parallel=2)
    study = storage.create(settings)
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.CategoricalDistribution(("8", "9"))
    }
    for _ in range(5):  # five good trials done before: the median is low at every step
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": "8"},
                distributions=distributions,
                value=0.1,
                intermediate_values={step: 0.1 for step in range(20)},
            )
        )
    agents = lab.agents(report_interval=0.2)
    try:
        args = ("--steps", "20", "--sleep", "0.3")
        reports = drive(Driver(store, settings, study, snapshot=snapshot(lab.repo, *args)))
        pruned = study.get_trials(states=(TrialState.PRUNED,))
        assert len(pruned) == 2 and sorted(n for r in reports for n in r.pruned) == [5, 6]
        ids = [t.user_attrs[TASK_ATTR] for t in pruned]
        for task_id in ids:  # the graceful cancel ends them
            wait_status(store, task_id, TaskStatus.CANCELED, timeout=30)
    finally:
        stop_all(agents)
    for trial in pruned:
        record = store.get(trial.user_attrs[TASK_ATTR])  # stopped early: 20 steps take 6 s
        assert record.ended is not None and record.started is not None
        assert record.ended - record.started < 5.5
        assert any("pruned at step" in note for note in record.notes)


def test_a_lost_trial_is_in_flight_while_a_retry_is_left_then_failed(lab: Lab) -> None:
    settings = settings_for("lost", "x=float:-6:6", trials=1, parallel=1)
    study = lab.storage.create(settings)
    driver = Driver(lab.store, settings, study, snapshot=snapshot(lab.repo))
    [task_id] = driver.step().enqueued.values()
    for attempt in (0, 1):  # retries=1: lost once, requeued; lost again: the trial failed
        lab.store.transition(task_id, TaskStatus.PREPARING, Change(agent="gone"))
        lab.store.transition(task_id, TaskStatus.LOST, Change(error="agent gone vanished"))
        report = driver.step()
        if attempt == 0:
            assert report.told == {} and report.in_flight == 1 and not report.enqueued
            lab.store.requeue(task_id, new_attempt=True)
    assert report.done and "ended lost: agent gone vanished" in report.told[0]
    [trial] = study.get_trials()
    assert trial.state is TrialState.FAIL and task_id in trial.user_attrs[REASON_ATTR]


def test_a_metric_no_run_reports_stops_the_study_naming_those_they_did(lab: Lab) -> None:
    settings = settings_for("nometric", "x=float:-6:6", metric="val_loss", trials=20, parallel=2)
    study = lab.storage.create(settings)
    driver = Driver(lab.store, settings, study, snapshot=snapshot(lab.repo))
    agents = lab.agents()
    try:
        with pytest.raises(MetricNeverReported) as raised:
            drive(driver)
    finally:
        stop_all(agents)
    message = str(raised.value)
    assert "first 3 trials ended with no val_loss (their runs reported: loss)" in message
    assert "\n" not in message
    assert len(sweep_tasks(lab.store, settings)) <= FIRST_WITHOUT_METRIC + settings.parallel
    with pytest.raises(MetricNeverReported):  # a restarted driver stops too
        Driver(lab.store, settings, study, snapshot=snapshot(lab.repo)).step()
