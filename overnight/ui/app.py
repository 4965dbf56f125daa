"""The routes of ``overnight ui``: pages rendered from the store on each request (Jinja2,
autoescaped), a log followed as server-sent events, and the actions as CSRF-checked POSTs (none
with ``read_only``). Every endpoint that reads Redis is a plain function, run in Starlette's
thread pool, so a slow read never stalls the others."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from overnight.commands.leaderboard import format_value
from overnight.commands.views import duration, params_text, when
from overnight.errors import CorruptRecord, OvernightError, TaskNotFound
from overnight.outputs import manifest
from overnight.outputs.stores import open_store
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.terminal import visible, visible_lines
from overnight.ui import actions, pages
from overnight.ui.runs import STATUSES, RunsFilter, runs_page
from overnight.ui.runview import log_line, run_view
from overnight.ui.security import CSRF_FIELD, Access, Guard
from overnight.units import format_bytes, format_duration

STATIC = Path(__file__).parent / "static"
POLL_SECONDS = 0.25  # how often a followed log is read: a line shows within about this long
KEEPALIVE_EVERY = 4  # polls between comments, so a closed page ends its stream soon
REAP_EVERY = 5.0  # seconds between lost-task checks, so a task whose agent died shows lost


@dataclasses.dataclass(frozen=True)
class UiSettings:
    """What the server serves from: the store, who may act, and where compare finds code."""

    store: TaskStore
    access: Access
    output_store: str | None = None
    local_repo: Path | None = None
    allow_local: bool = False


def _shown(value: Any) -> Any:
    """Every ``{{ }}`` of task text with its control characters visible (then autoescaped)."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return visible(value)


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("overnight.ui", "templates"), autoescape=True, finalize=_shown
    )
    env.filters["lines"] = lambda text: Markup(escape(visible_lines(str(text))))
    env.globals.update(
        when=when,
        run_time=lambda r: format_duration(d) if (d := duration(r)) is not None else "",
        value=format_value,
        size=format_bytes,
        params_text=params_text,
        statuses=STATUSES,
    )
    return env


def create_app(settings: UiSettings) -> Starlette:
    env = templates()
    store = settings.store
    access = settings.access

    last_reap = [0.0]

    def reap() -> None:
        """Mark tasks whose agent vanished lost, at most every :data:`REAP_EVERY` seconds (the
        CLI does so at each command; the page lives for days)."""
        if time.monotonic() - last_reap[0] > REAP_EVERY:
            last_reap[0] = time.monotonic()
            reap_lost(store)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            request=request, csrf=access.csrf, read_only=access.read_only, **context
        )
        return HTMLResponse(html, status_code=status)

    def task_id_of(request: Request) -> str:
        return store.resolve(request.path_params["task_id"])

    def page(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """A task that does not exist (or a record that cannot be read) is a 404 page."""

        def wrapped(request: Request) -> Response:
            try:
                return handler(request)
            except (TaskNotFound, CorruptRecord) as exc:
                return render(request, "message.html", 404, title="Not found", message=str(exc))

        return wrapped

    # -- runs -----------------------------------------------------------------------------------

    def wanted(request: Request) -> RunsFilter:
        return RunsFilter.from_params(request.query_params, request.query_params.getlist("metric"))

    def runs(request: Request) -> Response:
        """The runs page; its table alone for the filter form's htmx request."""
        reap()
        partial = request.headers.get("hx-target") == "runs"
        name = "runs_table.html" if partial else "runs.html"
        response = render(request, name, runs=runs_page(store, wanted(request)))
        response.headers["vary"] = "HX-Target"  # one address, two bodies: never cache one as both
        return response

    def statuses(request: Request) -> Response:
        """Status, time and error line of the tasks named (the runs list polls it)."""
        reap()
        ids = request.query_params.getlist("id")[:200]
        out = {}
        for record in store.get_many(ids):
            out[record.id] = {
                "status": record.status.value,
                "time": format_duration(d) if (d := duration(record)) is not None else "",
                "error": visible(record.error or ""),
                "failure": record.failure.label if record.failure is not None else "",
                "final": record.status.is_final or record.status is TaskStatus.CORRUPT,
            }
        return JSONResponse(out)

    # -- one run --------------------------------------------------------------------------------

    def run(request: Request) -> Response:
        view = run_view(store, task_id_of(request))
        return render(request, "run.html", view=view, r=view.record)

    def run_status(request: Request) -> Response:
        reap()
        record = store.get(task_id_of(request))
        return render(request, "run_status.html", r=record)

    def log_text(request: Request) -> Response:
        task_id = task_id_of(request)
        text = "\n".join(visible(e.line) for e in store.logs.read(task_id))
        return PlainTextResponse(text + "\n")

    def log_stream(request: Request) -> Response:
        task_id = task_id_of(request)
        after = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        return StreamingResponse(
            _follow(store, task_id, after),
            media_type="text/event-stream",
            headers={"cache-control": "no-store"},
        )

    def download(request: Request) -> Response:
        task_id = task_id_of(request)
        path = request.query_params.get("path", "")
        found = manifest.read(store.redis, task_id)
        entry = next((e for e in found.entries if e.path == path), None)
        if entry is None:
            return render(
                request, "message.html", 404, title="Not found",
                message=f"task {task_id} has no stored output {path!r}",
            )  # fmt: skip
        outputs = open_store(settings.output_store, store.redis)
        name = path.rsplit("/", 1)[-1].replace('"', "_")
        return StreamingResponse(
            outputs.read(entry.digest),
            media_type="application/octet-stream",
            headers={
                "content-disposition": f"attachment; filename*=UTF-8''{_quote(name)}",
                "content-length": str(entry.size),
            },
        )

    # -- other pages ----------------------------------------------------------------------------

    def compare(request: Request) -> Response:
        ids = [i for i in request.query_params.getlist("id") if i.strip()][:8]
        found = pages.compare_page(
            store, ids, local_repo=settings.local_repo, allow_local=settings.allow_local
        )
        return render(request, "compare.html", page=found, patch_lines=pages.patch_lines)

    def sweep(request: Request) -> Response:
        q = request.query_params
        found = pages.sweep_page(
            store,
            request.path_params["sweep_id"],
            sort=q.get("sort", ""),
            metric=q.get("metric", ""),
            param=q.get("param", ""),
        )
        return render(request, "sweep.html", page=found)

    def agents(request: Request) -> Response:
        rows, queues = pages.agents_page(store)
        return render(request, "agents.html", agents=rows, queues=queues, now=time.time())

    # -- actions --------------------------------------------------------------------------------

    def confirm(request: Request) -> Response:
        action = request.path_params["action"]
        record = store.get(task_id_of(request))
        queues = store.known_queues() if action == "move" else []
        return render(request, "confirm.html", action=action, r=record, queues=queues)

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not access.csrf_ok(form.get(CSRF_FIELD)):
            return render(
                request, "message.html", 403, title="Refused",
                message="this form is not from this page (its CSRF token is missing or old): "
                "reload the page and try again",
            )  # fmt: skip

        def run_action() -> actions.Outcome:
            task_id = task_id_of(request)
            if action == "cancel":
                return actions.cancel_task(store, task_id)
            if action == "retry":
                return actions.retry_task(store, task_id)
            if action in actions.QUEUE_ACTIONS:
                return actions.order_task(store, action, task_id, form)
            return actions.clone_task(store, task_id, form)

        try:
            outcome = await run_in_threadpool(run_action)
        except OvernightError as exc:
            outcome = actions.Outcome(str(exc), ok=False)
        status = 200 if outcome.ok else 409
        return render(
            request, "result.html", status, action=action, outcome=outcome,
            task_id=request.path_params["task_id"],
            order=action in actions.QUEUE_ACTIONS,
        )  # fmt: skip

    action_path = "/runs/{task_id}/{action:str}"
    routes = [
        Route("/", lambda request: RedirectResponse("/runs", 303)),
        Route("/runs", runs),
        Route("/runs/statuses", statuses),
        Route("/runs/{task_id}", page(run)),
        Route("/runs/{task_id}/status", page(run_status)),
        Route("/runs/{task_id}/log.txt", page(log_text)),
        Route("/runs/{task_id}/log/stream", page(log_stream)),
        Route("/runs/{task_id}/outputs/download", page(download)),
        Route("/compare", compare),
        Route("/sweeps/{sweep_id}", sweep),
        Route("/agents", agents),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if not access.read_only:
        routes.insert(-1, Route(action_path, page(_only_actions(confirm))))
        routes.insert(-1, Route(action_path, _only_actions_async(act), methods=["POST"]))
    app = Starlette(routes=routes)
    app.add_middleware(Guard, access=access)
    return app


def _only_actions(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    def wrapped(request: Request) -> Response:
        if request.path_params["action"] not in actions.ACTIONS:
            return PlainTextResponse("no such page", status_code=404)
        return handler(request)

    return wrapped


def _only_actions_async(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        if request.path_params["action"] not in actions.ACTIONS:
            return PlainTextResponse("no such page", status_code=404)
        try:
            response: Response = await handler(request)
        except (TaskNotFound, CorruptRecord) as exc:
            return PlainTextResponse(str(exc), status_code=404)
        return response

    return wrapped


def _follow(store: TaskStore, task_id: str, after: str) -> Iterator[str]:
    """The log from entry ``after`` on as server-sent events (``line``, then ``end`` once the
    task is final and its log drained); comments now and then show a closed page the door."""
    last = after
    idle = 0
    ended = False
    while True:
        entries = store.logs.read(task_id, after=last)
        for entry in entries:
            if not entry.marker:
                last = entry.id
            line = log_line(entry)
            data = json.dumps({"html": line.html, "kind": line.kind})
            yield f"id: {last}\nevent: line\ndata: {data}\n\n"
        if entries:
            continue
        if ended:
            yield "event: end\ndata: {}\n\n"
            return
        try:
            ended = store.get(task_id).status.is_final
        except (TaskNotFound, CorruptRecord):
            ended = True
        if ended:
            continue  # one more read: lines written just before the final status
        idle += 1
        if idle % KEEPALIVE_EVERY == 0:
            yield ": waiting\n\n"
        time.sleep(POLL_SECONDS)


def _quote(name: str) -> str:
    return quote(name, safe="")
