"""The runs list: the filters of ``overnight ls`` read from a page's query string, a page of
matching tasks, their params and the chosen metric columns (``ls``'s leaderboard).

Unsorted, a page reads the narrowest index newest-first and stops once it has the page (as
``ls`` does), so its cost does not grow with the queue. Sorted, it sorts the newest
:data:`SORT_WINDOW` matches, and says so when there were more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from overnight.commands.leaderboard import MetricColumn, arrange
from overnight.errors import OvernightError
from overnight.queue.durations import parse_since
from overnight.queue.index import Query
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

PER_PAGE = 50
SORT_WINDOW = 5000
MAX_PARAM_COLUMNS = 8
STATUSES = tuple(s.value for s in TaskStatus if s is not TaskStatus.CORRUPT)


@dataclasses.dataclass(frozen=True)
class RunsFilter:
    """What the runs page shows, as its query string says it."""

    queue: str = ""
    status: str = ""
    tag: str = ""
    sweep: str = ""
    text: str = ""
    since: str = ""
    sort: str = ""
    metrics: tuple[str, ...] = ()
    page: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, str], metrics: Sequence[str] = ()) -> RunsFilter:
        def get(name: str) -> str:
            return str(params.get(name, "")).strip()[:200]

        try:
            page = max(1, min(int(get("page") or 1), 10_000))
        except ValueError:
            page = 1
        wanted = [m.strip() for text in metrics for m in text.split(",") if m.strip()]
        return cls(
            queue=get("queue"),
            status=get("status") if get("status") in STATUSES else "",
            tag=get("tag"),
            sweep=get("sweep"),
            text=get("text"),
            since=get("since"),
            sort=get("sort"),
            metrics=tuple(dict.fromkeys(wanted))[:10],
            page=page,
        )

    def link(self, **changes: object) -> str:
        """This filter's query string with ``changes`` (a new sort goes back to page 1)."""
        chosen = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        pairs = [
            (f.name, str(getattr(chosen, f.name)))
            for f in dataclasses.fields(chosen)
            if f.name != "metrics" and getattr(chosen, f.name) not in ("", 1)
        ]
        pairs += [("metric", m) for m in chosen.metrics]
        return "?" + urlencode(pairs)

    def sort_link(self, name: str) -> str:
        """Sort by ``name``; again on the column already sorted by it: the other way."""
        return self.link(sort=name[1:] if self.sort == name else f"-{name}", page=1)

    @property
    def filtered(self) -> bool:
        return any((self.queue, self.status, self.tag, self.sweep, self.text, self.since))


@dataclasses.dataclass(frozen=True)
class RunsPage:
    """One page of runs with its columns, or the one-line problem of its filter."""

    filter: RunsFilter
    records: list[TaskRecord]
    columns: list[MetricColumn]
    params: list[str]
    has_next: bool
    warning: str | None = None
    error: str | None = None
    window_full: bool = False  # sorted among the newest SORT_WINDOW matches only


def runs_page(store: TaskStore, wanted: RunsFilter, *, per_page: int = PER_PAGE) -> RunsPage:
    """The page ``wanted`` asks for; a filter that cannot be read gives an empty page with its
    error (the same message ``overnight ls`` would print)."""
    try:
        query = Query(
            queue=wanted.queue or None,
            statuses=frozenset({TaskStatus(wanted.status)}) if wanted.status else frozenset(),
            tag=wanted.tag or None,
            since=parse_since(wanted.since) if wanted.since else None,
            sweep=store.resolve_sweep(wanted.sweep) if wanted.sweep else None,
            grep=wanted.text or None,
            limit=SORT_WINDOW if wanted.sort else wanted.page * per_page + 1,
        )
        found = store.find(query)
        board = arrange(found, sort=wanted.sort or None, metrics=wanted.metrics)
    except OvernightError as exc:
        return RunsPage(wanted, [], [], [], False, error=str(exc))
    start = (wanted.page - 1) * per_page
    records = board.records[start : start + per_page]
    params = list(dict.fromkeys(p for r in records for p in r.params))[:MAX_PARAM_COLUMNS]
    return RunsPage(
        wanted,
        records,
        board.columns,
        params,
        has_next=len(board.records) > start + per_page,
        warning=board.warning,
        window_full=bool(wanted.sort) and len(found) >= SORT_WINDOW,
    )
