"""The ``overnight`` command: a click group whose subcommands live in :mod:`overnight.commands`.

Errors from overnight reach the user as one line on stderr and a named exit code.
"""

from __future__ import annotations

import enum
from typing import Any

import click

from overnight import errors


class ExitCode(enum.IntEnum):
    """Exit codes of the ``overnight`` command, one per error area."""

    OK = 0
    FAILURE = 1  # generic failure, or a waited-for task that did not finish
    USAGE = 2  # click's own code for bad usage
    CONFIG = 3
    SNAPSHOT = 4
    QUEUE = 5
    NOT_FOUND = 6
    CONNECTION = 7
    AGENT = 8
    SPEC = 9
    RECONSTRUCT = 10


_CODES: list[tuple[type[errors.OvernightError], ExitCode]] = [
    (errors.ConnectionFailed, ExitCode.CONNECTION),
    (errors.TaskNotFound, ExitCode.NOT_FOUND),
    (errors.QueueError, ExitCode.QUEUE),
    (errors.ConfigError, ExitCode.CONFIG),
    (errors.UsageError, ExitCode.USAGE),
    (errors.SpecError, ExitCode.SPEC),
    (errors.SnapshotError, ExitCode.SNAPSHOT),
    (errors.ReconstructError, ExitCode.RECONSTRUCT),
    (errors.AgentError, ExitCode.AGENT),
]


def exit_code_for(exc: errors.OvernightError) -> ExitCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return ExitCode.FAILURE


class OvernightGroup(click.Group):
    """A group that turns :class:`OvernightError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.OvernightError as exc:
            click.echo(f"overnight: error: {exc}", err=True)
            ctx.exit(exit_code_for(exc))


@click.group(cls=OvernightGroup)
@click.version_option(package_name="overnight")
def cli() -> None:
    """Queue experiments from a laptop; GPU machines run them exactly as they were."""


@cli.group(cls=OvernightGroup)
def agent() -> None:
    """Commands run on a worker machine."""


def _register() -> None:
    # Each area adds its commands to `cli` or `agent` in its own module under overnight.commands.
    from overnight.commands import register

    register(cli, agent)


_register()


def main() -> None:
    cli(prog_name="overnight")


if __name__ == "__main__":
    main()
