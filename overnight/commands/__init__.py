"""Subcommands of ``overnight``, one module per area.

Each module exposes ``register(cli, agent)``; add a line below when a new area arrives.
"""

from __future__ import annotations

import click


def register(cli: click.Group, agent: click.Group) -> None:
    pass
