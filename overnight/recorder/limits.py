"""Size limits on what a snapshot carries, with errors that list the largest offenders and ways out."""

from __future__ import annotations

from collections.abc import Sequence

from overnight.errors import SnapshotTooLargeError

MB = 1024 * 1024
_SHOWN = 5


def mb(size: float) -> str:
    return f"{size / MB:.1f} MB"


def _offenders(items: Sequence[tuple[str, int]]) -> str:
    largest = sorted(items, key=lambda item: (-item[1], item[0]))[:_SHOWN]
    text = ", ".join(f"{name} ({mb(size)})" for name, size in largest)
    more = len(items) - len(largest)
    return text + (f" and {more} more" if more > 0 else "")


def check_untracked(files: Sequence[tuple[str, int]], limit_mb: float) -> None:
    """Refuse untracked files larger than ``limit_mb`` each."""
    limit = int(limit_mb * MB)
    big = [(path, size) for path, size in files if size > limit]
    if big:
        raise SnapshotTooLargeError(
            f"untracked file(s) over the {limit_mb:g} MB limit per file: {_offenders(big)}; "
            "add them to .gitignore, commit and push them, or raise --max-untracked-file-mb"
        )


def check_total(
    patch_size: int,
    bundle_size: int,
    changed: Sequence[tuple[str, int]],
    limit_mb: float,
    *,
    bundle_commits: int = 0,
) -> None:
    """Refuse a patch plus bundle larger than ``limit_mb``; ``changed`` are the patch's files."""
    total = patch_size + bundle_size
    if total <= limit_mb * MB:
        return
    items = list(changed)
    if bundle_size:
        items.append((f"unpushed commits ({bundle_commits}, as a bundle)", bundle_size))
    raise SnapshotTooLargeError(
        f"the snapshot is {mb(total)} (patch {mb(patch_size)}, bundle {mb(bundle_size)}), over "
        f"the {limit_mb:g} MB limit; largest: {_offenders(items)}; add generated files to "
        ".gitignore, commit and push large files, or raise --max-snapshot-mb"
    )
