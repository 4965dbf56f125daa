"""``overnight compare A B [C ...]``: runs side by side, and each run's code against the first's."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from overnight.agent.config import load_agent_config
from overnight.commands.common import (
    echo,
    echo_json,
    json_option,
    print_table,
    redis_option,
    store_for,
)
from overnight.commands.leaderboard import arrange
from overnight.comparison.codediff import CodeDiff, FileChange
from overnight.comparison.report import Comparison, Pair, compare_runs
from overnight.errors import UsageError
from overnight.queue.index import Query
from overnight.queue.store import TaskStore
from overnight.terminal import visible

_STYLES = (("diff --git", {"bold": True}), ("@@", {"fg": "cyan"}), ("+", {"fg": "green"}),
           ("-", {"fg": "red"}))  # fmt: skip
_PLAIN = ("+++ ", "--- ")


@click.command("compare")
@click.argument("task_ids", metavar="A B [C ...]", nargs=-1)
@click.option(
    "--sweep",
    default=None,
    metavar="ID",
    help="The sweep's tasks too, oldest first (or in --sort order), after any IDs given.",
)
@click.option(
    "--sort",
    default=None,
    metavar="KEY",
    help="With --sweep: order its tasks by a metric or param (-KEY descending): the first is A.",
)
@click.option("--only-changed", is_flag=True, help="Hide the fields that are equal in all runs.")
@click.option("--stat", "stat_only", is_flag=True, help="The changed files only, not their diff.")
@json_option
@redis_option
def compare_command(
    task_ids: tuple[str, ...],
    sweep: str | None,
    sort: str | None,
    only_changed: bool,
    stat_only: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Compare runs: their fields side by side, then each one's code as a diff against A's.

    The fields are the command, params, note, tags, queue, commit, python, requirements, env
    variable names, image, hardware, status, duration, exit code and metrics; * marks those
    that differ. The code is a unified diff between the two exact trees (commits, uncommitted
    and untracked changes; binary files named only). With C ..., each run is compared with A.

    Works from the stored snapshots: commits come from the repository you run it in, from the
    runs' bundles, or from their remote (fetched into a temporary folder, removed afterwards).

    \b
    overnight compare 38212cde a52fac01
    overnight compare --sweep 2bef18 --sort loss --only-changed   # the winner against the rest
    """
    _, store = store_for(redis_url)
    if sort is not None and sweep is None:
        raise UsageError("--sort orders a sweep's tasks: give --sweep ID too")
    if sweep is not None:
        task_ids = (*task_ids, *_sweep_tasks(store, sweep, sort, exclude=task_ids))
    comparison = compare_runs(
        store,
        task_ids,
        local_repo=Path.cwd(),
        allow_local=load_agent_config().allow_local_repos,
        stat_only=stat_only,
        on_fetch=lambda url: echo(f"fetching commits from {url}", err=True),
    )
    if as_json:
        echo_json(comparison_json(comparison, stat_only=stat_only))
        return
    rows = comparison.changed_rows() if only_changed else list(comparison.rows)
    shown = [row for row in rows if any(row.values)]  # a field no run has is left out
    if shown:
        headers = ["", "FIELD", *comparison.ids]
        print_table(headers, [["*" if r.changed else "", _label(r.section, r.field), *r.values]
                              for r in shown])  # fmt: skip
    elif only_changed:
        echo("the runs' fields are equal")
    color = sys.stdout.isatty()
    for pair in comparison.pairs:
        if only_changed and not pair.code.changed and not pair.requirements:
            continue
        for line in pair_lines(pair, stat_only=stat_only, color=color):
            click.echo(line)


def _label(section: str, field: str) -> str:
    return {"params": "param ", "metrics": "metric "}.get(section, "") + field


def pair_lines(pair: Pair, *, stat_only: bool, color: bool) -> Iterator[str]:
    """The code and requirements of ``pair.other`` against the baseline, each line made
    :func:`~overnight.terminal.visible` and, with ``color``, styled as ``git diff`` does."""
    code = pair.code
    yield ""
    yield visible(f"code of {pair.other} against {pair.base}: {_headline(code)}")
    yield from (visible(f"  {subject}") for subject in code.commits.subjects)
    if stat_only or not code.patch:
        yield from (visible(line) for line in stat_lines(code.files))
    else:
        yield from _styled(code.patch, color)
    if pair.requirements and not pair.requirements_in_code:
        yield ""
        yield visible(f"requirements of {pair.other} against {pair.base}:")
        yield from _styled(pair.requirements, color)


def _headline(code: CodeDiff) -> str:
    commits = code.commits
    parts = []
    if commits.old != commits.new:
        counts = (
            "history not available"
            if commits.ahead is None
            else f"{commits.ahead} ahead, {commits.behind} behind"
        )
        parts.append(f"commit {commits.old[:7]} -> {commits.new[:7]} ({counts})")
    else:
        parts.append(f"same commit {commits.old[:7]}")
    if not code.changed:
        parts.append(f"same tree {code.new_tree[:12]}")
    else:
        parts.append(_totals(code.files))
    return "; ".join(parts)


def _totals(files: Sequence[FileChange]) -> str:
    added = sum(f.added or 0 for f in files)
    deleted = sum(f.deleted or 0 for f in files)
    noun = "file" if len(files) == 1 else "files"
    return f"{len(files)} {noun} changed, {added} insertions(+), {deleted} deletions(-)"


def stat_lines(files: Sequence[FileChange]) -> list[str]:
    """One line per changed file, as ``git diff --stat`` names them: ``path | +3 -1``."""
    names = [f"{f.old_path} => {f.path}" if f.old_path else f.path for f in files]
    width = max((len(name) for name in names), default=0)
    return [
        f" {name:<{width}} | " + ("binary" if f.binary else f"+{f.added} -{f.deleted}")
        for name, f in zip(names, files, strict=True)
    ]


def _styled(text: str, color: bool) -> Iterator[str]:
    for line in text.rstrip("\n").split("\n"):
        shown = visible(line)
        if color and not line.startswith(_PLAIN):
            style = next((s for prefix, s in _STYLES if line.startswith(prefix)), None)
            shown = click.style(shown, **style) if style else shown
        yield shown


def comparison_json(comparison: Comparison, *, stat_only: bool) -> dict[str, Any]:
    """The comparison for scripts: fields (values by task id), metrics as numbers, and each
    run's code and requirements against the first's."""
    ids = comparison.ids
    return {
        "tasks": list(ids),
        "fields": [
            {
                "section": r.section,
                "field": r.field,
                "changed": r.changed,
                "values": dict(zip(ids, r.values, strict=True)),
            }
            for r in comparison.rows
        ],
        "metrics": {
            run.record.id: {name: m.to_dict() for name, m in run.record.metrics.items()}
            for run in comparison.runs
        },
        "pairs": [_pair_json(pair, stat_only=stat_only) for pair in comparison.pairs],
    }


def _pair_json(pair: Pair, *, stat_only: bool) -> dict[str, Any]:
    code = pair.code
    data: dict[str, Any] = {
        "base": pair.base,
        "other": pair.other,
        "changed": code.changed,
        "trees": [code.old_tree, code.new_tree],
        "commits": {
            "old": code.commits.old,
            "new": code.commits.new,
            "ahead": code.commits.ahead,
            "behind": code.commits.behind,
            "subjects": list(code.commits.subjects),
        },
        "files": [
            {
                "path": f.path,
                "old_path": f.old_path,
                "added": f.added,
                "deleted": f.deleted,
                "binary": f.binary,
            }
            for f in code.files
        ],
        "requirements_diff": pair.requirements,
    }
    if not stat_only:
        data["diff"] = code.patch
    return data


def _sweep_tasks(
    store: TaskStore, sweep: str, sort: str | None, *, exclude: Sequence[str]
) -> list[str]:
    """The ids of the sweep's tasks, oldest first or sorted by ``sort``, less those named."""
    found = store.resolve_sweep(sweep)
    records = sorted(store.find(Query(sweep=found, limit=None)), key=lambda r: r.created)
    named = {store.resolve(task_id) for task_id in exclude}
    records = [r for r in records if r.id not in named]
    return [r.id for r in arrange(records, sort=sort, metrics=()).records]


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(compare_command)
