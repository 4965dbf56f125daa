"""``overnight bump``, ``hold``, ``release`` and ``move``: the order in which queued tasks run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from overnight.commands.common import echo, echo_json, json_option, redis_option, store_for
from overnight.errors import InvalidTransition, exit_code_for
from overnight.queue import order
from overnight.queue.order import Outcome, Selection
from overnight.queue.store import TaskStore

F = Callable[..., Any]


def _selected(f: F) -> F:
    """``ID...``, ``--tag T`` and ``--sweep ID``: the tasks a command changes."""
    f = click.option(
        "--sweep", default=None, metavar="ID", help="Every task of the sweep too (its id)."
    )(f)
    f = click.option("--tag", default=None, metavar="T", help="Every task with tag T too.")(f)
    return click.argument("task_ids", metavar="[ID...]", nargs=-1)(f)


def _report(outcome: Outcome, done: str, as_json: bool) -> None:
    """One line per task; exits with the code of a refused transition when one was skipped."""
    if as_json:
        echo_json(
            {
                "changed": outcome.changed,
                "skipped": [{"id": t, "why": w} for t, w in outcome.skipped],
            }
        )
    else:
        for task_id in outcome.changed:
            echo(f"{task_id} {done}")
        for task_id, why in outcome.skipped:
            echo(f"overnight: {task_id} not {done}: {why}", err=True)
    if outcome.skipped:
        click.get_current_context().exit(exit_code_for(InvalidTransition(outcome.skipped[0][1])))


def _run(
    redis_url: str | None,
    task_ids: tuple[str, ...],
    tag: str | None,
    sweep: str | None,
    change: Callable[[TaskStore, Selection], Outcome],
) -> Outcome:
    selection = Selection(ids=task_ids, tag=tag, sweep=sweep)
    _, store = store_for(redis_url)
    return change(store, selection)


def _simple(
    name: str, change: Callable[[TaskStore, Selection], Outcome], done: str, help: str
) -> click.Command:
    """A command that applies ``change`` to the selected tasks and says what it did."""

    def command(
        task_ids: tuple[str, ...],
        tag: str | None,
        sweep: str | None,
        as_json: bool,
        redis_url: str | None,
    ) -> None:
        _report(_run(redis_url, task_ids, tag, sweep, change), done, as_json)

    command.__doc__ = help
    return click.command(name)(redis_option(json_option(_selected(command))))


bump_command = _simple(
    "bump",
    order.bump,
    "bumped",
    "Move queued tasks to the front of their queue, in the order given.",
)
hold_command = _simple(
    "hold",
    order.hold,
    "held",
    "Keep queued tasks from being taken (status held) until `overnight release`.",
)
release_command = _simple(
    "release",
    order.release,
    "released",
    "Queue held tasks again, each where it stood when it was held.",
)


@click.command("move")
@_selected
@click.option("-q", "--queue", "to", required=True, metavar="OTHER", help="The queue to move to.")
@click.option("--front", is_flag=True, help="At the front of OTHER (default: its back).")
@json_option
@redis_option
def move_command(
    task_ids: tuple[str, ...],
    tag: str | None,
    sweep: str | None,
    to: str,
    front: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Put queued or held tasks on another queue (held ones stay held)."""

    def change(store: TaskStore, selection: Selection) -> Outcome:
        return order.move(store, selection, to, at_front=front)

    _report(_run(redis_url, task_ids, tag, sweep, change), f"moved to {to}", as_json)


def register(cli: click.Group, agent: click.Group) -> None:
    for command in (bump_command, hold_command, release_command, move_command):
        cli.add_command(command)
