"""The driver: one :meth:`Driver.step` tells the study every trial whose task ended, reports the
intermediate values of running ones (cancelling those the pruner prunes), and asks for and
enqueues new trials while fewer than ``parallel`` tasks are in flight: no batch barrier.

The tasks are the truth of what is in flight: each carries the tags ``study:NAME`` and
``trial:N`` and the study's sweep id, so a driver started again (``--resume``, another agent
taking a lost lease) finds every trial's task and goes on; a trial that was asked for but whose
task was never enqueued (the driver stopped in between) is enqueued then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from overnight.errors import InvalidTransition, MetricNeverReported, OptimizeError, TaskNotFound
from overnight.optimize.settings import StudySettings
from overnight.optimize.space import set_values
from overnight.queue.cancel import request_cancel
from overnight.queue.index import Query
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from overnight.spec import Snapshot

TASK_ATTR = "overnight_task"
"""The user attribute of a trial naming its task."""
REASON_ATTR = "overnight_fail_reason"
"""The user attribute of a failed trial saying why."""
METRICS_ATTR = "overnight_metrics"
"""The user attribute of a trial whose run printed no value of the metric: the ones it did."""
FIRST_WITHOUT_METRIC = 3
"""When this many first trials all end without the metric, the driver stops (see
:class:`~overnight.errors.MetricNeverReported`): the rest of the budget would go the same way."""
STUDY_TAG = "study:"
TRIAL_TAG = "trial:"


@dataclasses.dataclass
class StepReport:
    """What one step did: trials told (number -> state and value or reason), enqueued (number ->
    task id), pruned; how many tasks are in flight after it; whether the study is done."""

    told: dict[int, str] = dataclasses.field(default_factory=dict)
    enqueued: dict[int, str] = dataclasses.field(default_factory=dict)
    pruned: list[int] = dataclasses.field(default_factory=list)
    in_flight: int = 0
    done: bool = False


def trial_number(record: TaskRecord) -> int | None:
    """The trial a task runs, from its ``trial:N`` tag (None for none or a malformed one)."""
    for tag in record.tags:
        if tag.startswith(TRIAL_TAG) and tag[len(TRIAL_TAG) :].isdigit():
            return int(tag[len(TRIAL_TAG) :])
    return None


def in_flight(record: TaskRecord) -> bool:
    """Queued or running, or lost with a retry to come (the reaper requeues it next)."""
    if record.status is TaskStatus.LOST:
        return record.attempt < record.options.retries
    return not record.status.is_final and record.status is not TaskStatus.CORRUPT


class Driver:
    """Drives ``study`` (``settings``' study) through ``store``; ``snapshot`` is the one every
    trial runs (when not given, the recorded snapshot of the study's first task)."""

    def __init__(
        self,
        store: TaskStore,
        settings: StudySettings,
        study: optuna.Study,
        *,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.study = study
        self._snapshot = snapshot
        self._distributions = {p.name: p.distribution() for p in settings.space}

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            first = self.store.find(Query(sweep=self.settings.sweep, limit=None))
            if not first:
                raise OptimizeError(
                    f"study {self.settings.name} has no task to take its snapshot from (its "
                    "first driver stopped before enqueuing one); start it again"
                )
            self._snapshot = self.store.recorded_snapshot(first[-1].id)
        return self._snapshot

    def tasks(self) -> dict[int, TaskRecord]:
        """Trial number -> its task (the newest, should there be two)."""
        found = self.store.find(Query(sweep=self.settings.sweep, limit=None))
        out: dict[int, TaskRecord] = {}
        for record in reversed(found):  # oldest first: the newest wins
            number = trial_number(record)
            if number is not None:
                out[number] = record
        return out

    def step(self) -> StepReport:
        report = StepReport()
        trials = self.study.get_trials(deepcopy=False)
        tasks = self.tasks()
        for trial in trials:
            if trial.state is not TrialState.RUNNING:
                continue
            record = tasks.get(trial.number)
            if record is None:
                record = self._enqueue(trial.number, trial.params)
                tasks[trial.number] = record
                report.enqueued[trial.number] = record.id
            elif not in_flight(record):
                report.told[trial.number] = self._finish(trial, record)
            elif record.status is TaskStatus.RUNNING and self._prunes(trial, record):
                report.pruned.append(trial.number)
        self._check_metric_reported()  # a restarted driver too
        flying = sum(1 for r in tasks.values() if in_flight(r))
        asked = sum(1 for t in trials if t.state is not TrialState.WAITING)  # enqueue_trial's
        while asked < self.settings.trials and flying < self.settings.parallel:
            new = self.study.ask(self._distributions)
            record = self._enqueue(new.number, new.params)
            report.enqueued[new.number] = record.id
            asked += 1
            flying += 1
        report.in_flight = flying
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        report.done = asked >= self.settings.trials and not running
        return report

    def _check_metric_reported(self) -> None:
        """Raise :class:`MetricNeverReported` when the first trials to end all lacked the metric."""
        ended = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        first = sorted(ended, key=lambda t: t.number)[:FIRST_WITHOUT_METRIC]
        if len(first) < FIRST_WITHOUT_METRIC or any(
            METRICS_ATTR not in t.user_attrs for t in first
        ):
            return
        seen = sorted({str(m) for t in first for m in t.user_attrs[METRICS_ATTR]})
        name, metric = self.settings.name, self.settings.metric
        raise MetricNeverReported(
            f"study {name}: its first {len(first)} trials ended with no {metric} (their runs "
            f"reported: {', '.join(seen[:12]) or 'no metric'}); fix --metric, or print "
            f"'{metric}: VALUE' (overnight cancel --sweep {name} stops the trials in flight)"
        )

    def _enqueue(self, number: int, params: Mapping[str, Any]) -> TaskRecord:
        snapshot = self.snapshot
        argv = set_values(snapshot.spec.argv, params, self.settings.spellings, self.settings.flags)
        tags = (*snapshot.spec.tags, STUDY_TAG + self.settings.name, f"{TRIAL_TAG}{number}")
        submission = Submission(
            snapshot, self.settings.options, argv=argv, tags=tags, sweep=self.settings.sweep
        )
        record = submit_many(self.store, [submission])[0]
        self._live(number).set_user_attr(TASK_ATTR, record.id)
        return record

    def _live(self, number: int) -> optuna.Trial:
        """The trial as Optuna's ask-and-tell ``Trial`` (what reports and sets attributes)."""
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number
        )
        return optuna.Trial(self.study, trial_id)

    def _finish(self, trial: FrozenTrial, record: TaskRecord) -> str:
        """Tell the study how the trial's ended task went; returns what was told."""
        live = self._live(trial.number)
        live.set_user_attr(TASK_ATTR, record.id)
        summary = record.metrics.get(self.settings.metric)
        if record.status is TaskStatus.FINISHED and summary is not None:
            value = float(getattr(summary, self.settings.reduce))
            self.study.tell(trial.number, value, skip_if_finished=True)
            return f"value {value:g}"
        if record.status is TaskStatus.FINISHED:
            shown = ", ".join(sorted(record.metrics)[:8]) or "none"
            live.set_user_attr(METRICS_ATTR, sorted(record.metrics))
            reason = (
                f"the run printed no {self.settings.metric} (its metrics: {shown}); print "
                f"'{self.settings.metric}: VALUE' or fix --metric"
            )
        else:
            error = f": {record.error}" if record.error else ""
            reason = f"its task {record.id} ended {record.status.value}{error}"
        live.set_user_attr(REASON_ATTR, reason)
        self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        self._note(
            record.id, f"optimize: trial {trial.number} of {self.settings.name} failed: {reason}"
        )
        return f"failed: {reason}"

    def _prunes(self, trial: FrozenTrial, record: TaskRecord) -> bool:
        """Report the run's new intermediate values; True when the pruner pruned the trial (its
        task is then canceled, gracefully)."""
        points = self.store.metric_series(record.id).get(self.settings.metric, [])
        new: dict[int, float] = {}
        for point in points:
            step, value = _point(point)
            if step is not None and step not in trial.intermediate_values:
                new[step] = value
        if not new:
            return False
        live = self._live(trial.number)
        for step in sorted(new):
            live.report(new[step], step)
        if not live.should_prune():
            return False
        self.study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
        with contextlib.suppress(InvalidTransition, TaskNotFound):  # it ended meanwhile
            request_cancel(self.store, record.id)
        self._note(record.id, f"optimize: trial {trial.number} pruned at step {max(new)}; canceled")
        return True

    def _note(self, task_id: str, note: str) -> None:
        with contextlib.suppress(TaskNotFound):
            self.store.add_note(task_id, note)


def _point(point: Any) -> tuple[int | None, float]:
    """A series point ``[seconds, step, value]`` -> (its whole step or None, its value)."""
    if not isinstance(point, list) or len(point) != 3:
        return None, 0.0
    _, step, value = point
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (step, value))
    if not numbers or not math.isfinite(step) or float(step) != int(step):
        return None, 0.0
    return int(step), float(value)
