"""A comparison of two or more runs: their fields side by side, and each run's code and
requirements against the first run's (the baseline).

Everything comes from the queue (records, stored snapshots) and git objects: no agent is asked
and no tree is checked out.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from pathlib import Path

from overnight.comparison.codediff import CodeDiff, TreeBuilder
from overnight.comparison.fields import Row, Run, rows
from overnight.errors import CorruptRecord, SpecError, UsageError
from overnight.queue.records import TaskRecord
from overnight.queue.store import TaskStore
from overnight.recorder.requirements import without_credentials
from overnight.spec import Snapshot


@dataclasses.dataclass(frozen=True)
class Pair:
    """One run against the baseline: its code diff and its requirements diff ("" if equal)."""

    base: str  # the baseline's task id
    other: str
    code: CodeDiff
    requirements: str
    requirements_in_code: bool = False  # the requirements file is in the code diff already


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Runs side by side (``rows``, a value per run in ``ids`` order) and each run after the
    first against the first (``pairs``)."""

    ids: tuple[str, ...]
    runs: tuple[Run, ...]
    rows: tuple[Row, ...]
    pairs: tuple[Pair, ...]

    def changed_rows(self) -> list[Row]:
        return [row for row in self.rows if row.changed]


def compare_runs(
    store: TaskStore,
    task_ids: Sequence[str],
    *,
    local_repo: Path | None = None,
    allow_local: bool = False,
    stat_only: bool = False,
    on_fetch: Callable[[str], None] | None = None,
) -> Comparison:
    """Compare the tasks ``task_ids`` (ids or unambiguous prefixes), the first as baseline.

    ``local_repo`` lends its commits (usually the repository compare runs in); commits it lacks
    come from the runs' bundles or their remote (a local path only with ``allow_local``).
    ``stat_only`` lists the changed files without their diff; ``on_fetch`` is told each remote
    before it is fetched.
    """
    if len(task_ids) < 2:
        raise UsageError("compare needs at least two tasks: overnight compare A B [C ...]")
    ids = tuple(store.resolve(task_id) for task_id in task_ids)
    twice = sorted({task_id for task_id in ids if ids.count(task_id) > 1})
    if twice:
        raise UsageError(f"task {twice[0]} is named twice; compare different tasks")
    loaded = [_load(store, task_id) for task_id in ids]
    runs = tuple(Run(record, snap.spec) for record, snap in loaded)
    base = loaded[0][1]
    pairs = []
    with TreeBuilder(local_repo=local_repo, allow_local=allow_local, on_fetch=on_fetch) as trees:
        for task_id, (_, snap) in zip(ids[1:], loaded[1:], strict=True):
            code = trees.diff(base, snap, (ids[0], task_id), stat_only=stat_only)
            reqs = _requirements_diff(base, snap, (ids[0], task_id))
            path = snap.spec.requirements.path
            in_code = path is not None and any(f.path == path for f in code.files)
            pairs.append(Pair(ids[0], task_id, code, reqs, in_code))
    return Comparison(ids, runs, tuple(rows(runs)), tuple(pairs))


def _load(store: TaskStore, task_id: str) -> tuple[TaskRecord, Snapshot]:
    record = store.get(task_id)
    try:
        return record, store.load_snapshot(task_id)
    except (CorruptRecord, SpecError) as exc:
        raise type(exc)(f"task {task_id} cannot be compared: {exc}") from exc


def _requirements_diff(old: Snapshot, new: Snapshot, ids: tuple[str, str]) -> str:
    """A unified diff of the two runs' requirements (credentials in URLs left out)."""
    before = without_credentials(old.spec.requirements.text).splitlines(keepends=True)
    after = without_credentials(new.spec.requirements.text).splitlines(keepends=True)
    lines = difflib.unified_diff(
        before, after, fromfile=f"{ids[0]}/requirements", tofile=f"{ids[1]}/requirements"
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
