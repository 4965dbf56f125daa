"""Subcommands of ``overnight``, one module per area.

Each module exposes ``register(cli, agent)``; add its name to ``_MODULES`` when a new area arrives.
"""

from __future__ import annotations

import importlib

import click

_MODULES = (
    "snapshot",  # overnight snapshot, overnight agent checkout
    "enqueue",  # overnight enqueue
    "tasks",  # overnight ls, show, logs, wait, cancel, retry, clone, gc
    "info",  # overnight queues, workers
    "daemon",  # overnight agent daemon
    "build",  # overnight agent build
    "reports",  # overnight top, summary
)


def register(cli: click.Group, agent: click.Group) -> None:
    for name in _MODULES:
        module = importlib.import_module(f"overnight.commands.{name}")
        module.register(cli, agent)
