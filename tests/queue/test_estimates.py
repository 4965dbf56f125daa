from __future__ import annotations

import dataclasses

from overnight.queue import keys
from overnight.queue.estimates import Estimate, Estimates, command_of
from overnight.queue.records import Change, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from overnight.spec import Snapshot
from tests.fixtures.tasks import make_snapshot


def _finished(store: TaskStore, record: TaskRecord, seconds: float) -> None:
    """Run the task to its end through the store, then date its run ``seconds`` long."""
    store.transition(record.id, TaskStatus.RUNNING, Change(agent="box"))
    done = store.transition(record.id, TaskStatus.FINISHED, Change(exit_code=0))
    assert done.ended is not None
    dated = dataclasses.replace(done, started=done.ended - seconds)
    store.redis.set(keys.task(record.id), dated.to_json())


def _sweep(store: TaskStore, snapshot: Snapshot, *argvs: tuple[str, ...]) -> list[TaskRecord]:
    sweep = keys.new_sweep_id()
    subs = [Submission(snapshot, TaskOptions(), argv=a, sweep=sweep) for a in argvs]
    return submit_many(store, subs)


def test_expect_wins_over_what_was_learned(store: TaskStore) -> None:
    snapshot = make_snapshot()
    done, asked = submit_many(
        store,
        [Submission(snapshot, TaskOptions()), Submission(snapshot, TaskOptions(expect=10800.0))],
    )
    _finished(store, done, 60.0)
    assert Estimates(store).of(asked) == Estimate(10800.0, "--expect")
    assert Estimates(store).of(asked).describe() == "3h00m (--expect)"  # type: ignore[union-attr]


def test_median_of_the_sweeps_finished_runs(store: TaskStore) -> None:
    snapshot = make_snapshot(argv=("python", "train.py"))
    argvs = [("python", "train.py", "--lr", str(lr)) for lr in (1, 2, 3, 4)]
    a, b, c, waiting = _sweep(store, snapshot, *argvs)
    for record, seconds in ((a, 600.0), (b, 3600.0), (c, 7200.0)):
        _finished(store, record, seconds)
    other = submit_many(
        store, [Submission(make_snapshot(argv=("python", "train.py")), TaskOptions())]
    )
    _finished(store, other[0], 10.0)  # same command, another sweep: the sweep's own runs win
    estimate = Estimates(store).of(waiting)
    assert estimate == Estimate(3600.0, "median of 3 finished runs of its sweep")
    (clone,) = submit_many(store, [Submission(snapshot, TaskOptions(), argv=argvs[0])])
    assert Estimates(store).of(clone) == Estimate(
        2100.0, "median of 4 finished runs of `python train.py`"
    )  # the same snapshot outside the sweep: not one of its runs


def test_else_the_median_of_the_same_command(store: TaskStore) -> None:
    for seconds in (100.0, 300.0):
        (done,) = submit_many(
            store,
            [Submission(make_snapshot(argv=("python", "train.py", "--lr", "1")), TaskOptions())],
        )
        _finished(store, done, seconds)
    (elsewhere,) = submit_many(
        store, [Submission(make_snapshot(argv=("python", "eval.py")), TaskOptions())]
    )
    _finished(store, elsewhere, 5000.0)
    (new,) = submit_many(
        store, [Submission(make_snapshot(argv=("python", "train.py", "--lr", "9")), TaskOptions())]
    )
    assert Estimates(store).of(new) == Estimate(
        200.0, "median of 2 finished runs of `python train.py`"
    )


def test_nothing_known_and_failed_runs_teach_nothing(store: TaskStore) -> None:
    snapshot = make_snapshot(argv=("python", "train.py"))
    failed, new = _sweep(store, snapshot, ("python", "train.py"), ("python", "train.py"))
    store.transition(failed.id, TaskStatus.RUNNING, Change(agent="box"))
    store.transition(failed.id, TaskStatus.FAILED, Change(exit_code=1))
    assert Estimates(store).of(new) is None


def test_command_of_is_the_program_part() -> None:
    assert command_of(["python", "-u", "train.py", "--lr", "1"]) == ("python", "-u", "train.py")
    assert command_of(["python", "-m", "pkg.train", "x=1"]) == ("python", "-m", "pkg.train")
    assert command_of(["./run.sh", "--fast"]) == ("./run.sh",)
