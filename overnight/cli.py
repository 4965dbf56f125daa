"""The ``overnight`` command: a click group whose subcommands live in :mod:`overnight.commands`.

Errors from overnight reach the user as one line on stderr and a named exit code. A command's
module is imported only when that command runs, so ``--help`` and quick commands start fast.
"""

from __future__ import annotations

from typing import Any

import click

from overnight import commands, errors
from overnight.errors import ExitCode, exit_code_for
from overnight.terminal import visible

_SUBCOMMAND = "overnight.subcommand"  # ctx.meta key: the subcommand a group resolved


class OvernightGroup(click.Group):
    """A group whose commands are imported on first use (from :data:`overnight.commands.COMMANDS`)
    and that turns :class:`OvernightError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.OvernightError as exc:
            click.echo(f"overnight: error: {visible(str(exc))}", err=True)
            ctx.exit(exit_code_for(exc))
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            # A subcommand's bad flag or argument: one line naming where help is, not a usage dump.
            sub = ctx.meta.get(_SUBCOMMAND)
            where = f"{ctx.command_path} {sub}" if sub else ctx.command_path
            message = exc.format_message().rstrip(".")
            click.echo(f"overnight: error: {visible(message)}; see `{where} --help`", err=True)
            ctx.exit(ExitCode.USAGE)

    @property
    def lazy(self) -> dict[str, commands.Entry]:
        return commands.COMMANDS.get(self.name or "", {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[_SUBCOMMAND] = name
        return name, command, rest

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        if cmd_name not in self.commands and entry is not None:
            commands.load(entry.module, cli, agent)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, with the registry's help for commands not imported yet.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                rows.append((name, short_help(self.lazy[name].help, limit)))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def short_help(text: str, limit: int) -> str:
    """``text`` shortened as click shortens a command's help in a listing (public API only)."""
    return click.Command(None, help=text).get_short_help_str(limit)


@click.group(cls=OvernightGroup, name="overnight")
@click.version_option(package_name="overnight")
def cli() -> None:
    """Queue experiments from a laptop; GPU machines run them exactly as they were."""


@cli.group(cls=OvernightGroup)
def agent() -> None:
    """Commands run on a worker machine."""


def main() -> None:
    cli(prog_name="overnight")


if __name__ == "__main__":
    main()
