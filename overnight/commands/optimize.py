"""``overnight optimize``: an Optuna study driven through the queue, one task per trial.

The tree is snapshotted once; up to ``--parallel`` trials are queued or running at a time, and as
soon as one ends its metric is told to the study and the next trial is enqueued. ``--resume``
goes on with a study after the driver stopped, ``--detach`` leaves the driving to the agents and
``--best`` prints the best trial. Optuna is imported only here and below (the ``optimize`` extra).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import click

from overnight.commands.common import (
    add_param_option,
    echo,
    echo_json,
    json_option,
    load_config,
    redis_option,
    run_options,
)
from overnight.commands.snapshot import (
    IGNORED_NOTE,
    echo_recorded,
    options_from_flags,
    snapshot_options,
)
from overnight.commands.trailing import TrailingCommand
from overnight.errors import OptimizeError, UsageError
from overnight.optimize import settings as stored
from overnight.optimize.installed import require_optuna
from overnight.optimize.settings import (
    DIRECTIONS,
    PRUNERS,
    REDUCERS,
    SAMPLERS,
    StudySettings,
)
from overnight.optimize.space import command_flags, command_spellings, grid, parse_space
from overnight.queue import keys
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import task_options
from overnight.recorder.account import review
from overnight.recorder.scriptargs import declared_params
from overnight.recorder.snapshot import SnapshotOptions, record
from overnight.spec import Snapshot


@click.command(
    "optimize",
    cls=TrailingCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=IGNORED_NOTE,
)
@click.option("--study", "name", default=None, help="The study's name (default: opt-<sweep id>).")
@click.option("--metric", default=None, metavar="NAME[:last|min|max]",
              help="The metric a trial is worth: its last value (default), or its lowest or "
              "highest with :min or :max.")  # fmt: skip
@click.option("--direction", type=click.Choice(DIRECTIONS), default="minimize", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--parallel", type=click.IntRange(min=1), default=4, show_default=True,
              help="Trials queued or running at a time.")  # fmt: skip
@click.option("--param", "params", multiple=True, metavar="NAME=KIND:...",
              help="A param to search (repeatable): lr=loguniform:1e-5:1e-1, x=float:-1:1, "
              "layers=int:2:8, bs=choice:32,64,128.")  # fmt: skip
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True,
              help="Prunes trials on the values a run prints with a step.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="The sampler's seed.")
@click.option("--storage", default=None, metavar="URL",
              help="An Optuna storage URL for the study (default: Optuna's Redis journal on "
              "overnight's Redis).")  # fmt: skip
@click.option("--detach", is_flag=True, help="Leave the driving to the agents and return.")
@click.option("--resume", default=None, metavar="STUDY", help="Go on driving STUDY.")
@click.option("--best", default=None, metavar="STUDY", help="Print STUDY's best trial.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds between looks at the trials' tasks.")  # fmt: skip
@click.option("--lease-ttl", type=click.FloatRange(min=0.5), default=30.0, show_default=True,
              help="Seconds a driver that stopped (killed, laptop closed) keeps the study before "
              "another may take it over.")  # fmt: skip
@run_options(retries=1)
@add_param_option
@click.option("--quiet", is_flag=True, help="No account of what was recorded on stderr.")
@json_option
@redis_option
@snapshot_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def optimize_command(
    name: str | None,
    metric: str | None,
    direction: str,
    trials: int,
    parallel: int,
    params: tuple[str, ...],
    sampler: str,
    pruner: str,
    seed: int | None,
    storage: str | None,
    detach: bool,
    resume: str | None,
    best: str | None,
    poll: float,
    lease_ttl: float,
    queue: str | None,
    gpus: int | None,
    image: str | None,
    timeout: str | None,
    grace: str | None,
    retries: int,
    add_param: bool,
    quiet: bool,
    as_json: bool,
    redis_url: str | None,
    command: tuple[str, ...],
    **flags: Any,
) -> None:
    """Search CMD's params with an Optuna study, one task per trial; prints the best trial.

    \b
    overnight optimize -q gpu --metric val_loss --trials 60 --parallel 8 \\
        --param lr=loguniform:1e-5:1e-1 --param bs=choice:32,64,128 -- python train.py
    overnight optimize --resume opt-3f9a1c2b4d5e     # after a reboot: go on
    overnight optimize --best opt-3f9a1c2b4d5e
    """
    require_optuna()
    from overnight.optimize.storage import StudyStorage

    config = load_config(
        redis_url,
        max_snapshot_mb=flags.get("max_snapshot_mb"),
        max_untracked_file_mb=flags.get("max_untracked_file_mb"),
    )
    if (best is not None or resume is not None) and (command or params or metric):
        raise UsageError("--best and --resume take a study name alone, no command or --param")
    store = TaskStore.from_config(config)
    if best is not None:
        settings = stored.load(store.redis, best)
        with StudyStorage(config.redis_url, _storage_for(settings, storage)) as opened:
            print_best(store, opened.load(settings), as_json=as_json)
        return
    if resume is not None:
        settings = stored.load(store.redis, resume)
        if detach and not settings.journal:
            raise UsageError("--detach needs the study in overnight's Redis (no --storage)")
        settings = StudySettings(**{**_fields(settings), "detached": detach})
        with StudyStorage(config.redis_url, _storage_for(settings, storage)) as opened:
            drive(store, settings, opened.load(settings), poll=poll, lease_ttl=lease_ttl,
                  as_json=as_json)  # fmt: skip
        return
    reap_lost(store)
    wanted = {"name": name, "metric": metric, "direction": direction, "trials": trials,
              "parallel": parallel, "sampler": sampler, "pruner": pruner, "seed": seed,
              "detached": detach, "journal": storage is None}  # fmt: skip
    options = task_options(store, config, queue=queue, gpus=gpus, image=image, timeout=timeout,
                           retries=retries, after=(), grace=grace)  # fmt: skip
    settings = _new_settings(store, command, params, wanted, options, add_param=add_param)
    snapshot = _record(command, options_from_flags(flags, config), quiet=quiet)
    from optuna.exceptions import DuplicatedStudyError

    with StudyStorage(config.redis_url, storage) as opened:
        try:
            study = opened.create(settings)
        except DuplicatedStudyError:
            raise OptimizeError(
                f"the storage already has a study named {settings.name}; pick another --study "
                f"or go on with it: overnight optimize --resume {settings.name}"
            ) from None
        stored.save(store.redis, settings)
        echo(f"study {settings.name}: overnight summary --sweep {settings.name}", err=True)
        drive(store, settings, study, poll=poll, lease_ttl=lease_ttl, as_json=as_json,
              snapshot=snapshot)  # fmt: skip


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(optimize_command)


def _fields(settings: StudySettings) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in settings.__dataclass_fields__}


def _storage_for(settings: StudySettings, url: str | None) -> str | None:
    if not settings.journal and url is None:
        raise UsageError(
            f"study {settings.name} is in a storage of its own; give its URL again with --storage"
        )
    return None if settings.journal else url


def _new_settings(
    store: TaskStore,
    command: tuple[str, ...],
    params: tuple[str, ...],
    wanted: dict[str, Any],
    options: TaskOptions,
    *,
    add_param: bool,
) -> StudySettings:
    """The new study's settings, checked: its metric, its params (names the command takes),
    a name no study here has."""
    if not command:
        raise UsageError("no command to optimize; put it after --: overnight optimize ... -- CMD")
    metric = wanted.pop("metric")
    if not metric or not params:
        raise UsageError("give the metric to optimize (--metric NAME) and at least one --param")
    if wanted["detached"] and not wanted["journal"]:
        raise UsageError("--detach needs the study in overnight's Redis; leave out --storage")
    metric_name, _, reduce = metric.partition(":")
    if reduce and reduce not in REDUCERS:
        raise UsageError(f"--metric {metric}: use NAME, NAME:min, NAME:max or NAME:last")
    space = parse_space(params)
    declared = declared_params(command, Path.cwd())
    spellings = command_spellings(command, space, declared, add=add_param)
    if wanted["sampler"] == "grid":  # each point once
        points = math.prod(len(values) for values in grid(space).values())
        wanted["trials"] = min(wanted["trials"], points)
    sweep = keys.new_sweep_id()
    wanted["name"] = wanted["name"] or f"opt-{sweep}"
    if stored.exists(store.redis, wanted["name"]):
        raise OptimizeError(
            f"a study named {wanted['name']} was started here already; pick another --study or "
            f"go on with it: overnight optimize --resume {wanted['name']}"
        )
    return StudySettings(
        sweep=sweep, metric=metric_name, reduce=reduce or "last",
        params=tuple(p.text() for p in space), options=options, spellings=spellings,
        flags=command_flags(command, space, declared), created=time.time(), **wanted,
    )  # fmt: skip


def _record(command: tuple[str, ...], options: SnapshotOptions, *, quiet: bool) -> Snapshot:
    """The snapshot every trial shares; warnings and what was recorded on stderr."""
    recording = record(Path.cwd(), command, options, dict(os.environ))
    echo_recorded(recording.snapshot, review(recording, quiet=quiet))
    return recording.snapshot


def drive(
    store: TaskStore,
    settings: StudySettings,
    study: Any,
    *,
    poll: float,
    lease_ttl: float,
    as_json: bool,
    snapshot: Snapshot | None = None,
) -> None:
    """Drive the study until it is done (or, detached, hand it to the agents after one step)."""
    from overnight.optimize.driver import Driver
    from overnight.optimize.lease import DriverLease

    stored.save(store.redis, settings)
    lease = DriverLease(store.redis, settings.name, ttl=lease_ttl)
    driver = Driver(store, settings, study, snapshot=snapshot)
    waiting = False
    try:
        while True:
            if not lease.take():
                if settings.detached:  # the agents drive it already
                    break
                if not waiting:
                    echo(f"study {settings.name}: {lease.holder()} drives it; waiting", err=True)
                    waiting = True
                time.sleep(poll)
                continue
            reap_lost(store)  # a dead agent's trials are requeued (or failed) without waiting
            report = driver.step()
            for number, task_id in report.enqueued.items():
                echo(f"trial {number}: enqueued as task {task_id}", err=True)
            for number, told in report.told.items():
                echo(f"trial {number}: {told}", err=True)
            for number in report.pruned:
                echo(f"trial {number}: pruned; its task is being canceled", err=True)
            if report.done or settings.detached:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        echo(
            f"driver stopped; the trials in flight go on: overnight optimize --resume "
            f"{settings.name}",
            err=True,
        )
        raise SystemExit(130) from None
    finally:
        lease.release()
    if settings.detached:
        echo(f"study {settings.name}: the agents drive it now; overnight optimize --best "
             f"{settings.name}", err=True)  # fmt: skip
        return
    print_best(store, study, as_json=as_json)


def print_best(store: TaskStore, study: Any, *, as_json: bool) -> None:
    """The best trial: its value, params and task (``--json``: as one object)."""
    from overnight.optimize.driver import TASK_ATTR

    try:
        trial = study.best_trial
    except ValueError:
        raise OptimizeError(
            f"study {study.study_name} has no completed trial yet; overnight summary --sweep "
            f"{study.study_name} shows its tasks"
        ) from None
    task = trial.user_attrs.get(TASK_ATTR)
    if as_json:
        echo_json({"study": study.study_name, "trial": trial.number, "value": trial.value,
                   "params": trial.params, "task": task})  # fmt: skip
        return
    echo(f"best trial {trial.number} of {study.study_name}: value {trial.value:g}, task {task}")
    for key, value in trial.params.items():
        echo(f"  {key} = {value}")
