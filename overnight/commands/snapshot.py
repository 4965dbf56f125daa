"""``overnight snapshot``: print a task spec without queueing it (no Redis needed).

:func:`snapshot_options` and :func:`options_from_flags` are shared with ``overnight enqueue``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from overnight.commands.trailing import TrailingCommand
from overnight.config import ClientConfig, load_client_config
from overnight.recorder.account import Review, review
from overnight.recorder.snapshot import SnapshotOptions, record
from overnight.spec import Snapshot
from overnight.terminal import visible, visible_lines
from overnight.units import format_bytes

F = TypeVar("F", bound=Callable[..., Any])

IGNORED_NOTE = (
    "Ignored files (.gitignore, .git/info/exclude, core.excludesFile) are not captured; "
    "everything else in the working tree is, untracked and binary files included."
)


def snapshot_options(f: F) -> F:
    """Add the snapshot flags (requirements, env, note, tags, name, size limits) to a command."""
    decorators = [
        click.option(
            "--requirements",
            "requirements_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Requirements file to record (default: the nearest project file from the "
            "script's folder up: uv.lock, poetry.lock, Pipfile.lock, requirements.txt, "
            "environment.yml, pyproject.toml; else a freeze of the command's Python).",
        ),
        click.option(
            "--env",
            "env",
            multiple=True,
            metavar="NAME[=VALUE]",
            help="Environment variable for the task; NAME takes its value from here. "
            "Secret-looking ones (a name with TOKEN, SECRET, PASS, KEY, AUTH...; a value with "
            "a password in a URL or a known token) need --allow-secret-env.",
        ),
        click.option(
            "--allow-secret-env",
            is_flag=True,
            default=False,
            help="Record --env variables whose names or values look like secrets.",
        ),
        click.option(
            "--allow-secret-files",
            is_flag=True,
            default=False,
            help="Record untracked files named like keys or credentials (.env, *.pem, .netrc) "
            "and uncommitted or unpushed lines that hold one (a password in a URL, a token).",
        ),
        click.option(
            "-m", "--note", default="", help="Why this run exists (the lab-notebook line)."
        ),
        click.option("--tag", "tags", multiple=True, help="A tag for the task (repeatable)."),
        click.option(
            "--outputs",
            "outputs",
            multiple=True,
            metavar="GLOB",
            help="Output files to bring home besides $OVERNIGHT_OUTPUT_DIR, relative to the "
            "repository root (repeatable; a folder takes what is in it; ** any folders).",
        ),
        click.option(
            "--metrics",
            "metric_files",
            multiple=True,
            metavar="FILE",
            help="A metrics file the task writes (CSV with a header row, or JSON lines), "
            "relative to the repository root (outputs/... is $OVERNIGHT_OUTPUT_DIR); read as "
            "it grows (repeatable). Metric lines of the output are read without it.",
        ),
        click.option("--name", default=None, help="A short name for the task."),
        click.option(
            "--max-snapshot-mb",
            type=float,
            default=None,
            help="Largest patch plus bundle, in MB (default 20, or max_snapshot_mb in config).",
        ),
        click.option(
            "--max-untracked-file-mb",
            type=float,
            default=None,
            help="Largest single untracked file, in MB (default 5).",
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def options_from_flags(flags: Mapping[str, Any], config: ClientConfig) -> SnapshotOptions:
    """The :class:`SnapshotOptions` for the flags :func:`snapshot_options` added; config fills gaps."""
    max_snapshot = flags.get("max_snapshot_mb")
    max_untracked = flags.get("max_untracked_file_mb")
    return SnapshotOptions.from_config(
        config,
        requirements_file=flags.get("requirements_file"),
        env=flags.get("env") or (),
        allow_secret_env=bool(flags.get("allow_secret_env", False)),
        allow_secret_files=bool(flags.get("allow_secret_files", False)),
        note=flags.get("note") or "",
        tags=flags.get("tags") or (),
        outputs=flags.get("outputs") or (),
        metric_files=flags.get("metric_files") or (),
        name=flags.get("name"),
        max_snapshot_mb=None if max_snapshot is None else float(max_snapshot),
        max_untracked_file_mb=None if max_untracked is None else float(max_untracked),
    )


def _summary(snap: Snapshot) -> str:
    spec = snap.spec
    repo = spec.repo
    lines = [
        f"repo:         {repo.url or '(no remote)'}" + (f" [{repo.remote}]" if repo.remote else ""),
        f"commit:       {repo.commit}" + (f" on {repo.branch}" if repo.branch else " (detached)"),
        f"changes:      {_blob_line(spec.patch.size if spec.patch else 0, 'patch')}"
        + ("" if repo.dirty else " (clean)"),
        f"unpushed:     {_blob_line(spec.bundle.size if spec.bundle else 0, 'bundle')}",
        f"requirements: {spec.requirements.source}"
        + (f" ({spec.requirements.path})" if spec.requirements.path else "")
        + f", {len(spec.requirements.text.splitlines())} lines",
        f"python:       {spec.python}",
        f"workdir:      {spec.workdir}",
        f"command:      {' '.join(spec.argv)}",
    ]
    if spec.params:
        lines.append("params:       " + " ".join(f"{k}={v}" for k, v in spec.params.items()))
    if spec.env:
        lines.append("env:          " + " ".join(sorted(spec.env)))
    if repo.submodules:
        changed = spec.submodule_patches
        lines.append(
            "submodules:   "
            + " ".join(
                f"{path} (patch {changed[path].size} B)" if path in changed else path
                for path in sorted({*repo.submodules, *changed})
            )
        )
    for label, value in (("name", spec.name), ("note", spec.note), ("tags", " ".join(spec.tags))):
        if value:
            lines.append(f"{label + ':':<14}{value}")
    return "\n".join(lines)


def _blob_line(size: int, kind: str) -> str:
    return f"{kind} of {format_bytes(size)}" if size else "none"


@click.command(
    "snapshot",
    cls=TrailingCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=IGNORED_NOTE,
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON (blobs inlined).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON snapshot to FILE (only when the snapshot succeeds).",
)
@snapshot_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def snapshot_command(
    as_json: bool, output: Path | None, command: tuple[str, ...], **flags: Any
) -> None:
    """Record the working tree and CMD as a task spec, without queueing it.

    A missing script is refused and warnings print on stderr, as for enqueue.

    \b
    overnight snapshot --json -- python train.py --lr 0.01 > task.json
    """
    config = load_client_config(
        flags={k: flags.get(k) for k in ("max_snapshot_mb", "max_untracked_file_mb")}
    )
    recording = record(Path.cwd(), command, options_from_flags(flags, config), dict(os.environ))
    told = review(recording, quiet=True)  # a missing script fails here, as for enqueue
    snap = recording.snapshot
    if output is not None:
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(snap.to_json() + "\n")
        tmp.replace(output)
    if as_json:
        click.echo(snap.to_json())
    else:
        click.echo(visible_lines(_summary(snap)))
    echo_recorded(snap, told)


def echo_recorded(snapshot: Snapshot, told: Review) -> None:
    """On stderr, what recording ``snapshot`` noticed (an interpreter mapped), its warnings and,
    unless asked to be quiet, its one-line account: the same lines for every command that
    records (snapshot, enqueue, optimize)."""
    for notice in snapshot.notices:
        click.echo(visible(f"overnight: {notice}"), err=True)
    for warning in told.warnings:
        click.echo(visible(f"overnight: warning: {warning}"), err=True)
    if told.account:
        click.echo(visible(f"overnight: {told.account}"), err=True)


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(snapshot_command)
