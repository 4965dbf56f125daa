"""Subcommands of ``overnight``, one module per area, imported only when one of its commands runs.

Each module exposes ``register(cli, agent)``. :data:`COMMANDS` names every command's module and the
short help ``--help`` lists, so listing the commands imports none of them (docker, rq, rich...);
add a row per command when a module gains one (tests/test_cli.py checks the table against what
the modules register).
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click


class Entry(NamedTuple):
    """Where a command lives and the one line ``--help`` shows for it."""

    module: str  # under overnight.commands
    help: str


COMMANDS: dict[str, dict[str, Entry]] = {
    "overnight": {
        "snapshot": Entry(
            "snapshot", "Record the working tree and CMD as a task spec, without queueing it."
        ),
        "enqueue": Entry(
            "enqueue",
            "Snapshot the working tree and queue CMD; prints the task id (one per line for a "
            "sweep).",
        ),
        "ls": Entry("tasks", "List tasks, newest first."),
        "show": Entry("tasks", "Everything about one task: command, code, status, history."),
        "logs": Entry("tasks", "Print a task's output (stdout and stderr, merged)."),
        "wait": Entry("tasks", "Wait until the tasks end; exit 0 only if all of them finished."),
        "cancel": Entry(
            "tasks",
            "Cancel tasks: a queued one now, a running one by asking its agent to stop it.",
        ),
        "retry": Entry(
            "tasks",
            "Enqueue the same spec again as a new task linked to the first; prints the new id.",
        ),
        "clone": Entry(
            "tasks",
            "Enqueue a copy of a task with params changed in its command; prints the new id.",
        ),
        "bump": Entry(
            "order", "Move queued tasks to the front of their queue, in the order given."
        ),
        "hold": Entry(
            "order", "Keep queued tasks from being taken (status held) until `overnight release`."
        ),
        "release": Entry("order", "Queue held tasks again, each where it stood when it was held."),
        "move": Entry("order", "Put queued or held tasks on another queue (held ones stay held)."),
        "outputs": Entry(
            "outputs", "A task's stored output files: path, size, when stored, attempt."
        ),
        "pull": Entry(
            "outputs",
            "Download a task's outputs to ./overnight-outputs/<id>/ (or --to DIR); rerun to "
            "resume.",
        ),
        "gc": Entry(
            "tasks",
            "Remove old ended tasks: records, specs, logs, RQ jobs and blobs nothing else uses.",
        ),
        "queues": Entry(
            "info",
            "Each queue with its queued, waiting and running tasks and the agents serving it.",
        ),
        "workers": Entry(
            "info", "Live agents: queues, GPUs, state, current tasks, last heartbeat."
        ),
        "top": Entry(
            "reports", "A live view of agents, their GPUs and running tasks (Ctrl-C to quit)."
        ),
        "compare": Entry(
            "compare",
            "Compare runs: their fields side by side, then each one's code as a diff against A's.",
        ),
        "ui": Entry(
            "ui",
            "Serve a web page of the queue: runs, logs, code, metrics, agents, and actions on "
            "them.",
        ),
        "summary": Entry(
            "reports",
            "What ran since a moment: counts by status; per task params, duration, exit, GPU peak.",
        ),
        "optimize": Entry(
            "optimize",
            "Search CMD's params with an Optuna study, one task per trial; prints the best trial.",
        ),
    },
    "agent": {
        "checkout": Entry(
            "checkout",
            "Rebuild the working tree of SPEC at DEST: a file from `snapshot --json`, or a "
            "task id.",
        ),
        "daemon": Entry(
            "daemon",
            "Take tasks from QUEUEs, rebuild their tree and environment, run them, report back.",
        ),
        "build": Entry(
            "build",
            "Build a standalone image of task ID (or a SPEC file from `snapshot --json`).",
        ),
    },
}
"""Group name -> command name -> :class:`Entry`."""

MODULES = tuple(dict.fromkeys(e.module for group in COMMANDS.values() for e in group.values()))

_loaded: set[str] = set()


def load(module: str, cli: click.Group, agent: click.Group) -> None:
    """Import ``overnight.commands.MODULE`` and add its commands to ``cli`` and ``agent``, once."""
    if module in _loaded:
        return
    importlib.import_module(f"overnight.commands.{module}").register(cli, agent)
    _loaded.add(module)
