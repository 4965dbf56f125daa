"""``overnight enqueue``: snapshot the working tree and queue the command (or a sweep of it)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from overnight.commands.common import (
    add_param_option,
    echo_json,
    json_option,
    load_config,
    redis_option,
    run_options,
)
from overnight.commands.leaderboard import MetricColumn
from overnight.commands.snapshot import (
    IGNORED_NOTE,
    echo_recorded,
    options_from_flags,
    snapshot_options,
)
from overnight.commands.trailing import TrailingCommand
from overnight.commands.views import record_json
from overnight.errors import UsageError
from overnight.queue.durations import parse_duration
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskOptions, TaskRecord
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep, task_options
from overnight.queue.sweeps import Sweep, expand, parse_sweep
from overnight.recorder.account import review
from overnight.recorder.params import Param
from overnight.recorder.scriptargs import declared_params
from overnight.recorder.snapshot import SnapshotOptions, record


@click.command(
    "enqueue",
    cls=TrailingCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=IGNORED_NOTE,
)
@run_options(retries=0)
@click.option(
    "--expect",
    default=None,
    metavar="DURATION",
    help="How long it is expected to run, e.g. 3h: an agent whose window closes sooner leaves "
    "it for later. Default: learned from finished runs of its sweep or command.",
)
@click.option(
    "--retry-on",
    default=None,
    metavar="KINDS",
    help="Failure kinds --retries is for, comma-separated: infra (agent lost, disk full), oom "
    "(the host's OOM killer), run (the command's own exit, a timeout), setup (tree, "
    "environment), all [default: infra].",
)
@click.option(
    "--notify",
    multiple=True,
    metavar="URL",
    help="Tell its failure and its sweep's end here (repeatable, added to the notify setting): "
    "an https:// webhook (Slack-compatible), ntfy+https://HOST/TOPIC, mailto:ADDRESS.",
)
@click.option(
    "--notify-metric",
    default=None,
    metavar="METRIC",
    help="The sweep's end names its best run by it: loss (lowest), -acc:max (highest).",
)
@click.option("--front", is_flag=True, help="Put it ahead of the tasks already queued.")
@click.option("--after", multiple=True, metavar="ID", help="Start only after task ID finished.")
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="NAME=V1,V2",
    help="Enqueue one task per value (repeat for a cross product). NAME must be a param of "
    "the command (see --add-param).",
)
@add_param_option
@click.option(
    "--quiet",
    is_flag=True,
    help="No account of what was recorded on stderr (warnings still print); ids on stdout.",
)
@json_option
@redis_option
@snapshot_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def enqueue_command(
    queue: str | None,
    gpus: int | None,
    image: str | None,
    timeout: str | None,
    grace: str | None,
    expect: str | None,
    front: bool,
    retries: int,
    retry_on: str | None,
    notify: tuple[str, ...],
    notify_metric: str | None,
    after: tuple[str, ...],
    sweeps: tuple[str, ...],
    add_param: bool,
    quiet: bool,
    as_json: bool,
    redis_url: str | None,
    command: tuple[str, ...],
    **flags: Any,
) -> None:
    """Snapshot the working tree and queue CMD; prints the task id (one per line for a sweep).

    A sweep also prints its sweep id on stderr: `ls`, `summary`, `wait`, `cancel` and `pull`
    take it with --sweep ID.

    \b
    overnight enqueue -q gpu --gpus 1 -m "baseline" -- python train.py --lr 0.01
    overnight enqueue --sweep lr=0.1,0.01 --sweep bs=32,64 -- python train.py
    """
    if not command:
        raise UsageError(
            "no command to enqueue; put it after --: overnight enqueue -- python train.py"
        )
    parsed_sweeps = [parse_sweep(s) for s in sweeps]
    declared = declared_params(command, Path.cwd()) if parsed_sweeps else ()
    expand(command, parsed_sweeps, declared=declared, add=add_param)  # bad sweeps fail first
    for value, what in ((timeout, "--timeout"), (grace, "--grace"), (expect, "--expect")):
        if value is not None:
            parse_duration(value, what=what)
    config = load_config(
        redis_url,
        max_snapshot_mb=flags.get("max_snapshot_mb"),
        max_untracked_file_mb=flags.get("max_untracked_file_mb"),
    )
    store = TaskStore.from_config(config)  # before the snapshot: an unreachable Redis fails fast
    reap_lost(store)
    metric = notify_metric or config.notify_metric
    if metric is not None:  # a sweep's end names its best run by it: a name it can sort by
        MetricColumn.parse(metric.removeprefix("-"))
    options = task_options(
        store, config, queue=queue, gpus=gpus, image=image, timeout=timeout, retries=retries,
        after=after, grace=grace, expect=expect, retry_on=retry_on, notify=notify,
        notify_metric=notify_metric,
    )  # fmt: skip
    snapshot_options = options_from_flags(flags, config)
    records = submit_command(
        store, Path.cwd(), command, options, snapshot_options, parsed_sweeps,
        declared=declared, add_param=add_param, quiet=quiet, at_front=front,
    )  # fmt: skip
    sweep = records[0].sweep
    if sweep is not None:  # on stderr: stdout holds the ids alone, for $(...) and xargs
        click.echo(
            f"sweep {sweep}: {len(records)} task(s); overnight summary --sweep {sweep}", err=True
        )
    if as_json:
        echo_json([record_json(r) for r in records])
    else:
        for record in records:
            click.echo(record.id)


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(enqueue_command)


def submit_command(
    store: TaskStore,
    cwd: Path,
    argv: Sequence[str],
    options: TaskOptions,
    snapshot_options: SnapshotOptions,
    sweeps: Sequence[Sweep] = (),
    *,
    declared: Sequence[Param] = (),
    add_param: bool = False,
    quiet: bool = False,
    at_front: bool = False,
) -> list[TaskRecord]:
    """Snapshot ``cwd`` for ``argv`` and enqueue it (once, or once per sweep combination);
    ``declared`` are the options its script declares, ``add_param`` allows sweeps over others,
    ``at_front`` puts the tasks ahead of those already queued. Warnings and the account of what
    was recorded go to stderr."""
    recording = record(cwd, argv, snapshot_options, dict(os.environ))
    told = review(recording, quiet=quiet)  # a missing script fails here, before anything queues
    snapshot = recording.snapshot
    records = submit_sweep(
        store, snapshot, options, sweeps, name=snapshot.spec.name, declared=declared,
        add_params=add_param, at_front=at_front,
    )  # fmt: skip
    echo_recorded(snapshot, told)  # after: a failing enqueue says only why, in one line
    return records
