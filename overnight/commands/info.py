"""Commands of the `info` area (filled in by its issue)."""

from __future__ import annotations

import click


def register(cli: click.Group, agent: click.Group) -> None:
    pass
