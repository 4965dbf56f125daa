"""``overnight outputs`` and ``overnight pull``: a task's output files, listed and brought home."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from overnight.commands.common import (
    echo,
    echo_json,
    json_option,
    load_config,
    print_table,
    redis_option,
)
from overnight.errors import OutputError, SweepNotFound, UsageError
from overnight.outputs.manifest import Manifest, OutputEntry
from overnight.units import format_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console

    from overnight.api import Client
    from overnight.outputs.pull import PullReport


@click.command("outputs")
@click.argument("task_id", metavar="ID")
@json_option
@redis_option
def outputs_command(task_id: str, as_json: bool, redis_url: str | None) -> None:
    """A task's stored output files: path, size, when stored, attempt."""
    from overnight.api import Client

    with Client(config=load_config(redis_url)) as client:
        found = client.outputs(task_id)
    if as_json:
        echo_json(
            {
                "task": found.task_id,
                "files": [_entry_json(e) for e in found.entries],
                "notes": [{"path": n.path, "reason": n.reason, "attempt": n.attempt}
                          for n in found.notes],
                "refused": list(found.refused),
            }
        )  # fmt: skip
        return
    if not found.entries and not found.notes:
        echo(f"task {found.task_id} has no stored outputs")
        return
    if found.entries:
        rows = [
            [e.path, format_bytes(e.size), _when(e.stored), str(e.attempt)] for e in found.entries
        ]
        print_table(["path", "size", "stored", "attempt"], rows)
    for line in note_lines(found):
        echo(line)


@click.command("pull")
@click.argument("task_id", metavar="[ID]", required=False)
@click.option(
    "--sweep", "sweep", metavar="ID", help="Every task of a sweep (or of task ID's), a folder each."
)
@click.option("--tag", "tag", metavar="TAG", help="Every task with this tag, a folder each.")
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write the files in (default ./overnight-outputs/<id>/; with --sweep or "
    "--tag, DIR/<id>/ per task).",
)
@redis_option
def pull_command(
    task_id: str | None,
    sweep: str | None,
    tag: str | None,
    dest: Path | None,
    redis_url: str | None,
) -> None:
    """Download a task's outputs to ./overnight-outputs/<id>/ (or --to DIR); rerun to resume.

    Files already there with the same content are skipped; each file is written under a
    temporary name and renamed once complete, so an interrupted pull resumes when run again.

    \b
    overnight pull 3f2a9c --to results/
    overnight pull --sweep 3f2a9c        # the whole sweep, ./overnight-outputs/<id>/ each
    overnight pull --tag baseline
    """
    from overnight.api import Client

    if sum(x is not None for x in (task_id, sweep, tag)) != 1:
        raise UsageError("name what to pull: a task ID, --sweep ID or --tag TAG (one of them)")
    failed = 0
    with Client(config=load_config(redis_url)) as client:
        several = task_id is None
        for found in _manifests(client, task_id, sweep, tag):
            base = dest if dest is not None else Path("overnight-outputs")
            where = base / found.task_id if several or dest is None else base
            report = _pull_one(client, found, where)
            if report.cleaned:
                echo(
                    f"{found.task_id}: removed {len(report.cleaned)} partial file(s) an "
                    "interrupted pull left",
                    err=True,
                )
            for failure in report.failed:
                echo(f"not pulled: {found.task_id}: {failure}", err=True)
            echo(
                f"{found.task_id}: {len(report.fetched)} file(s) pulled, "
                f"{len(report.skipped)} already there, to {where}",
                err=True,
            )
            failed += len(report.failed)
    if failed:
        raise OutputError(
            f"{failed} output file(s) were not pulled (see above); run the pull again once the "
            "cause is fixed"
        )


def _pull_one(client: Client, found: Manifest, where: Path) -> PullReport:
    """Pull one task's files with a progress bar on stderr (gone once done)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=_stderr_console(),
        transient=True,
    ) as bar:
        total = bar.add_task(f"pulling {found.task_id}", total=found.total_size)
        return client.pull(found.task_id, to=where, progress=lambda _e, n: bar.advance(total, n))


def _manifests(
    client: Client, task_id: str | None, sweep: str | None, tag: str | None
) -> Iterator[Manifest]:
    """The manifests to pull: one task's, a sweep's, a tag's."""
    if task_id is not None:
        yield client.outputs(task_id)
        return
    if sweep is not None:
        try:
            records = client.ls(sweep=sweep, limit=None)
        except SweepNotFound:
            # A task enqueued before sweeps had ids: the tasks sharing its recorded spec.
            spec_id = client.get(sweep).spec_id
            records = [r for r in client.ls(limit=None) if r.spec_id == spec_id]
    else:
        records = client.ls(tag=tag, limit=None)
    if not records:
        raise UsageError(f"no task has the tag {tag!r}; overnight ls --tag lists them")
    for record in sorted(records, key=lambda r: r.created):
        yield client.outputs(record.id)


def note_lines(found: Manifest) -> list[str]:
    """The notes of files not kept, and the entries refused, one line each."""
    lines = [f"not kept: {n.path}: {n.reason}" for n in found.notes]
    lines += [f"refused: {why}" for why in found.refused]
    return lines


def summary(found: Manifest) -> str:
    """One line for ``show``: how many files, their size, how many notes."""
    text = f"{len(found.entries)} file(s), {format_bytes(found.total_size)}"
    if found.notes:
        text += f"; {len(found.notes)} not kept"
    return text


def _entry_json(entry: OutputEntry) -> dict[str, object]:
    return {
        "path": entry.path,
        "size": entry.size,
        "digest": entry.digest,
        "mtime": entry.mtime,
        "stored": entry.stored,
        "attempt": entry.attempt,
        "store": entry.store,
    }


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(outputs_command)
    cli.add_command(pull_command)
