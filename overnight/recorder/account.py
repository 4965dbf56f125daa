"""What enqueue tells on stderr of what it recorded: warnings, then a one-line account.

The account names the commit and branch, the uncommitted change, the untracked files recorded,
the ignored files left out (how many, and the biggest) and where the requirements came from, so a
Friday-evening mistake (a data file that is ignored, the wrong requirements) shows before the
sweep runs. It costs one git command (the ignored files' listing); the rest, the check of the files
the command names included, is what the snapshot saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from overnight.recorder.commandfiles import check_command
from overnight.recorder.ignored import IgnoredEntry, IgnoredFiles
from overnight.recorder.snapshot import Recording
from overnight.units import format_bytes

_NAMED = 3  # files named per part of the account; the rest are counted


@dataclass(frozen=True)
class Review:
    """The lines to print: warnings (always) and the account (None when asked to be quiet)."""

    warnings: tuple[str, ...]
    account: str | None


def review(recording: Recording, *, quiet: bool = False) -> Review:
    """The warnings and account of ``recording``; raises :class:`MissingScriptError` when the
    command's script is not in the recorded tree."""
    spec = recording.snapshot.spec
    warnings = [*recording.notes, *check_command(spec.argv, recording.workdir, recording.tree)]
    return Review(tuple(warnings), None if quiet else account_line(recording))


def account_line(recording: Recording) -> str:
    """The account, on one line: what was recorded, what was left out."""
    ignored = IgnoredFiles(recording.git)
    spec = recording.snapshot.spec
    repo = spec.repo
    head = f"recorded {repo.commit[:10]}" + (f" on {repo.branch}" if repo.branch else " (detached)")
    if recording.unpushed_commits:
        head += f" with {_count(recording.unpushed_commits, 'unpushed commit')}"
    parts = [head]
    if spec.patch is None:
        parts.append("no uncommitted change")
    else:
        files = _count(recording.changed, "file")
        parts.append(f"uncommitted: {files}, patch of {format_bytes(spec.patch.size)}")
    if recording.untracked:
        parts.append(f"untracked recorded: {_names(list(recording.untracked))}")
    entries = ignored.entries
    if entries:
        biggest = [_entry(e) for e in ignored.biggest(_NAMED)]
        parts.append(
            f"ignored, left out: {len(entries)}" + (f" ({', '.join(biggest)})" if biggest else "")
        )
    reqs = spec.requirements
    parts.append(f"requirements: {reqs.path or reqs.source}")
    return "; ".join(parts)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _names(paths: list[str]) -> str:
    shown = ", ".join(paths[:_NAMED])
    return shown + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


def _entry(entry: IgnoredEntry) -> str:
    return entry.path if entry.size is None else f"{entry.path} {format_bytes(entry.size)}"
