"""Commands that take a command to run after their own options (``enqueue``, ``snapshot``).

Their options are parsed strictly up to ``--`` or the first word that is not an option (the
command's own first word, ``python``); from there on every word is the command's, untouched. An
unknown option before that point is a usage error naming the closest one, so that
``enqueue --gpu 0 -- python train.py`` fails at once instead of queueing ``--gpu 0 -- ...``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import click


class TrailingCommand(click.Command):
    """A click command whose last argument is the command to run (``nargs=-1``, unprocessed);
    give it ``context_settings={"allow_interspersed_args": False}`` so the first plain word
    starts the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))
        except click.NoSuchOption as exc:
            given = _as_written(exc.option_name, args)
            raise click.UsageError(unknown_option(given, self._spellings(ctx)), ctx) from None

    def _spellings(self, ctx: click.Context) -> list[str]:
        names = [o for p in self.get_params(ctx) for o in (*p.opts, *p.secondary_opts)]
        return [n for n in names if n.startswith("-")]


def unknown_option(given: str, spellings: Sequence[str]) -> str:
    """The message for an unknown option: the closest known one, and where the command goes."""
    close = difflib.get_close_matches(given, spellings, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown option {given}{hint}; the command to run goes after --, options and all"


def _as_written(option: str, args: Sequence[str]) -> str:
    """The word the user typed for click's ``option`` (``-gpu`` where click names ``-g``)."""
    for arg in args:
        if arg == "--":
            break
        word = arg.split("=", 1)[0]
        if word == option or (not option.startswith("--") and word.startswith(option)):
            return word
    return option
