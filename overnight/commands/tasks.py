"""Commands on tasks: ``ls``, ``show``, ``logs``, ``wait``, ``cancel``, ``retry``, ``clone``, ``gc``."""

from __future__ import annotations

import datetime as _dt
import shlex
import time
from collections.abc import Callable

import click
import redis

from overnight.commands.common import (
    add_param_option,
    echo,
    echo_json,
    echo_lines,
    json_option,
    print_table,
    redis_option,
    store_for,
    to_jsonable,
)
from overnight.commands.leaderboard import (
    arrange,
    check_formats,
    echo_csv,
    leaderboard_options,
)
from overnight.commands.outputs import note_lines, summary
from overnight.commands.reports import live_usage, offer_problem
from overnight.commands.views import (
    ls_headers,
    ls_row,
    ls_table_row,
    record_json,
    show_lines,
    spec_json,
    wait_reason,
)
from overnight.errors import (
    ConnectionFailed,
    CorruptRecord,
    InvalidTransition,
    OvernightError,
    SpecError,
    UsageError,
)
from overnight.optimize.gc import collect_studies
from overnight.outputs import manifest
from overnight.outputs.stores import open_store
from overnight.queue.agents import AgentRegistry
from overnight.queue.cancel import cancel_queue, request_cancel
from overnight.queue.durations import parse_duration, parse_since
from overnight.queue.gc import collect, collect_outputs
from overnight.queue.index import Query
from overnight.queue.logs import LogEntry
from overnight.queue.reaper import reap_lost
from overnight.queue.records import FAILED_ON, TaskRecord, TaskStatus
from overnight.queue.resubmit import clone, parse_setting, retry
from overnight.queue.store import TaskStore
from overnight.terminal import visible

_STATUSES = [s.value for s in TaskStatus]
_REAP_EVERY = 5.0  # seconds between lost-task checks while a command waits
_FIRST_PAUSE, _MAX_PAUSE = 0.25, 10.0  # seconds between tries while Redis is away
_REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionFailed)
"""The agent's ``CONNECTION_ERRORS``, without importing the agent (``ls`` stays light)."""


@click.command("ls")
@click.option("-q", "--queue", default=None, help="Only this queue.")
@click.option(
    "-s", "--status", "statuses", multiple=True, type=click.Choice(_STATUSES), help="Only these."
)
@click.option("--tag", default=None, help="Only tasks with this tag.")
@click.option(
    "--sweep",
    default=None,
    metavar="ID",
    help="Only the tasks of sweep ID (or of task ID's sweep).",
)
@click.option("--since", default=None, metavar="WHEN", help="Created since: 2d, 12h or a date.")
@click.option(
    "--grep", default=None, metavar="TEXT", help="Only tasks whose name, note, tags or command "
    "contain TEXT (any case).",
)  # fmt: skip
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE",
    help="Only tasks with this param value (repeat: all of them).",
)  # fmt: skip
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many, newest first (with --sort: the first of the sorted) (0: all).",
)
@leaderboard_options
@json_option
@redis_option
def ls_command(
    queue: str | None,
    statuses: tuple[str, ...],
    tag: str | None,
    sweep: str | None,
    since: str | None,
    grep: str | None,
    params: tuple[str, ...],
    limit: int,
    sort: str | None,
    metrics: tuple[str, ...],
    as_csv: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """List tasks, newest first."""
    check_formats(as_json, as_csv)
    wanted = tuple(_param_filter(p) for p in params)
    start = parse_since(since) if since else None
    _, store = store_for(redis_url)
    query = Query(
        queue=queue,
        statuses=frozenset(TaskStatus(s) for s in statuses),
        tag=tag,
        since=start,
        sweep=store.resolve_sweep(sweep) if sweep else None,
        grep=grep or None,
        params=wanted,
        limit=None if sort else limit or None,  # sorting needs every match
    )
    board = arrange(store.find(query), sort=sort, metrics=metrics, limit=limit or None)
    records = board.records
    if board.warning:
        echo(f"overnight: note: {board.warning}", err=True)
    if as_csv:
        echo_csv([ls_table_row(r, board.columns) for r in records])
        return
    agents = AgentRegistry(store.redis).list()
    problems = {r.id: p for r in records if (p := offer_problem(r, agents))}
    if as_json:
        echo_json([{**record_json(r), "problem": problems.get(r.id)} for r in records])
    elif records:
        note = any(r.note for r in records)
        rows = [
            ls_row(r, flagged=r.id in problems, columns=board.columns, note=note) for r in records
        ]
        print_table(ls_headers(board.columns, note=note), rows)
        for problem, ids in _grouped(problems).items():
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            echo(f"! {problem}: {shown}")
    else:
        filtered = queue or statuses or tag or sweep or since or grep or params
        click.echo("no tasks" + (" match" if filtered else ""))


def _param_filter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("-")
    if not sep or not name:
        raise UsageError(f"invalid --param {text!r}: use NAME=VALUE, e.g. --param lr=0.1")
    return name, value.strip()


def _grouped(problems: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for task_id, problem in problems.items():
        grouped.setdefault(problem, []).append(task_id)
    return grouped


@click.command("show")
@click.argument("task_id", metavar="ID")
@click.option(
    "--show-secrets",
    is_flag=True,
    help="Print the values of secret-looking env variables (recorded with --allow-secret-env) "
    "instead of ***.",
)
@json_option
@redis_option
def show_command(task_id: str, show_secrets: bool, as_json: bool, redis_url: str | None) -> None:
    """Everything about one task: command, code, status, history."""
    _, store = store_for(redis_url)
    record = store.get(store.resolve(task_id))
    spec, problem = None, None
    try:
        spec = store.load_snapshot(record.id).spec
    except (SpecError, CorruptRecord) as exc:
        problem = str(exc)
    if as_json:
        data = record_json(record)
        resources = data.get("extra", {}).get("resources")
        if isinstance(resources, dict) and "series" not in resources:
            resources["series"] = store.series(record.id)
        data["metric_series"] = store.metric_series(record.id)
        data["spec"] = spec_json(spec, show_secrets=show_secrets) if spec is not None else None
        data["log_bytes"] = store.logs.size(record.id)
        data["waits"] = wait_reason(store, record)
        data["log_trimmed_lines"] = store.logs.trimmed(record.id)[0]
        found = manifest.read(store.redis, record.id)
        data["outputs"] = {"files": len(found.entries), "bytes": found.total_size,
                           "notes": {n.path: n.reason for n in found.notes}}  # fmt: skip
        echo_json(data)
        return
    for line in show_lines(record, spec, problem):
        echo(line)
    for line in _log_losses(store, record):
        echo(f"log:          {line}")
    found = manifest.read(store.redis, record.id)
    if found.entries or found.notes or found.refused:
        echo(f"outputs:      {summary(found)} (overnight outputs {record.id} lists them)")
        echo_lines(note_lines(found))
    agents = AgentRegistry(store.redis).list()
    now = live_usage(record, agents)
    if now:
        echo(f"now:          {now}")
    offer = offer_problem(record, agents)
    if offer:
        echo(f"warning:      {offer}")
    waits = wait_reason(store, record)
    if waits:
        echo(f"waits:        {waits}")


def _log_losses(store: TaskStore, record: TaskRecord) -> list[str]:
    """What of the task's output its log lacks: lines trimmed past the cap, lines lost on the
    way (the agent could not deliver them)."""
    losses = []
    trimmed = store.logs.trimmed_text(record.id)
    if trimmed:
        losses.append(trimmed)
    run = record.extra.get("run")
    dropped = run.get("dropped_log_lines") if isinstance(run, dict) else None
    if isinstance(dropped, int) and dropped > 0:
        losses.append(f"{dropped} lines of output were lost: the agent could not store them")
    return losses


@click.command("logs")
@click.argument("task_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the task ends.")
@click.option(
    "--tail",
    "tail",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Only the last N lines.",
)
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with its time.")
@redis_option
def logs_command(
    task_id: str, follow: bool, tail: int | None, timestamps: bool, redis_url: str | None
) -> None:
    """Print a task's output (stdout and stderr, merged)."""
    _, store = store_for(redis_url)
    full_id = store.resolve(task_id)
    entries = store.logs.tail(full_id, tail) if tail else store.logs.read(full_id)
    for entry in entries:
        _echo_line(entry, timestamps)
    if not follow:
        return
    after = next((e.id for e in reversed(entries) if not e.marker), None)
    if after is None:
        after = "0-0" if entries else "0"
    _follow(store, full_id, after, timestamps)


def _follow(store: TaskStore, task_id: str, after: str, timestamps: bool) -> None:
    """Print new lines until the task ends, waiting out Redis outages as agents do: retried
    after pauses that double up to ``_MAX_PAUSE``, going on after the last line printed."""
    ended = _ended(store, task_id)
    pause, away = _FIRST_PAUSE, False
    while True:
        try:
            if away:
                store.redis.ping()
                click.echo("overnight: Redis answers again; following the log", err=True)
                pause, away = _FIRST_PAUSE, False
            for entry in store.logs.follow(task_id, until=ended, after=after):
                if not entry.marker:
                    _echo_line(entry, timestamps)
                    after = entry.id
            return
        except _REDIS_AWAY as exc:
            if not away:
                click.echo(
                    f"overnight: Redis is unreachable ({exc}); waiting for it (Ctrl-C to stop)",
                    err=True,
                )
            away = True
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)


FORGED = "[task output] "
"""Put before a line of the task's output that starts like one of overnight's own lines."""


def _echo_line(entry: LogEntry, timestamps: bool) -> None:
    line = visible(entry.line)
    if entry.forged:
        line = FORGED + line
    if timestamps:
        line = _dt.datetime.fromtimestamp(entry.time).strftime("%H:%M:%S ") + line
    click.echo(line)


def _ended(store: TaskStore, task_id: str) -> Callable[[], bool]:
    """A check for ``follow``: true once the task is final (reaping now and then, so that a task
    whose agent died ends the stream too)."""
    last_reap = time.monotonic()

    def check() -> bool:
        nonlocal last_reap
        if time.monotonic() - last_reap > _REAP_EVERY:
            reap_lost(store)
            last_reap = time.monotonic()
        try:
            return store.get(task_id).status.is_final
        except CorruptRecord:
            return True

    return check


@click.command("wait")
@click.argument("task_ids", metavar="[ID...]", nargs=-1)
@click.option("--sweep", default=None, metavar="ID", help="Wait for every task of this sweep.")
@click.option("--timeout", default=None, metavar="DURATION", help="Give up after, e.g. 2h.")
@redis_option
def wait_command(
    task_ids: tuple[str, ...], sweep: str | None, timeout: str | None, redis_url: str | None
) -> None:
    """Wait until the tasks end; exit 0 only if all of them finished."""
    from overnight.errors import ExitCode

    if not task_ids and sweep is None:
        raise UsageError(
            "name the tasks to wait for (overnight wait ID...) or a sweep (--sweep ID)"
        )
    limit = parse_duration(timeout, what="--timeout") if timeout else None
    _, store = store_for(redis_url)
    pending = list(
        dict.fromkeys([*(store.resolve(t) for t in task_ids), *_sweep_tasks(store, sweep)])
    )
    start = last_reap = time.monotonic()
    all_finished = True
    while pending:
        records = {r.id: r for r in store.get_many(pending)}
        for task_id in list(pending):
            record = records.get(task_id)
            status = record.status.value if record is not None else "gone (removed from Redis)"
            if record is None or record.status.is_final or record.status is TaskStatus.CORRUPT:
                echo(f"{task_id} {status}")
                all_finished &= record is not None and record.status is TaskStatus.FINISHED
                pending.remove(task_id)
        if not pending:
            break
        if limit is not None and time.monotonic() - start > limit:
            echo(f"gave up waiting for {', '.join(pending)} after {timeout}", err=True)
            click.get_current_context().exit(ExitCode.FAILURE)
        time.sleep(0.5)
        if time.monotonic() - last_reap > _REAP_EVERY:
            reap_lost(store)
            last_reap = time.monotonic()
    if not all_finished:
        click.get_current_context().exit(ExitCode.FAILURE)


@click.command("cancel")
@click.argument("task_ids", metavar="ID...", nargs=-1)
@click.option("-q", "--queue", default=None, help="Cancel every queued task of this queue.")
@click.option(
    "--sweep", default=None, metavar="ID", help="Cancel every task of this sweep not yet ended."
)
@redis_option
def cancel_command(
    task_ids: tuple[str, ...], queue: str | None, sweep: str | None, redis_url: str | None
) -> None:
    """Cancel tasks: a queued one now, a running one by asking its agent to stop it."""
    from overnight.errors import ExitCode, exit_code_for

    if not task_ids and queue is None and sweep is None:
        raise UsageError(
            "name the tasks to cancel (overnight cancel ID...), a queue (--queue Q) or a sweep "
            "(--sweep ID)"
        )
    _, store = store_for(redis_url)
    failures: list[OvernightError] = []
    if queue is not None:
        canceled = cancel_queue(store, queue)
        click.echo(f"canceled {len(canceled)} queued task(s) of queue {queue}")
    chosen = [store.resolve(t) for t in task_ids]
    if sweep is not None:
        open_tasks = _sweep_tasks(store, sweep, ended=False)
        if not open_tasks:
            click.echo(f"every task of sweep {store.resolve_sweep(sweep)} has ended already")
        chosen += open_tasks
    for task_id in dict.fromkeys(chosen):
        try:
            record = request_cancel(store, task_id)
        except (InvalidTransition, OvernightError) as exc:
            echo(f"overnight: error: {exc}", err=True)
            failures.append(exc)
            continue
        if record.status is TaskStatus.CANCELED:
            echo(f"{record.id} canceled")
        else:
            where = f" on {record.agent}" if record.agent else ""
            echo(f"{record.id} {record.status.value}{where}: asked its agent to stop it")
    if failures:
        code = exit_code_for(failures[0]) if len(failures) == 1 else ExitCode.FAILURE
        click.get_current_context().exit(code)


def _sweep_tasks(store: TaskStore, sweep: str | None, *, ended: bool = True) -> list[str]:
    """The ids of a sweep's tasks, oldest first (without those ended, unless ``ended``)."""
    if sweep is None:
        return []
    records = store.find(Query(sweep=store.resolve_sweep(sweep), limit=None))
    return [r.id for r in reversed(records) if ended or not r.status.is_final]


_NEW_QUEUE = click.option(
    "-q", "--queue", default=None, help="Queue for the new task (default: the same)."
)
_NEW_GPUS = click.option(
    "--gpus", type=click.IntRange(min=0), default=None, help="GPUs (default: the same)."
)


@click.command("retry")
@click.argument("task_id", metavar="ID")
@_NEW_QUEUE
@_NEW_GPUS
@click.option(
    "--resume",
    is_flag=True,
    help="Start from the first task's stored outputs: restored into the new task's tree, with "
    "OVERNIGHT_RESUME=1.",
)
@json_option
@redis_option
def retry_command(
    task_id: str,
    queue: str | None,
    gpus: int | None,
    resume: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Enqueue the same spec again as a new task linked to the first; prints the new id.

    The new task's `show` says `retry of ID`; the first one's notes say `retried as NEW`. With
    --resume the new task's tree gets the first one's stored outputs (its checkpoints) before it
    starts, and OVERNIGHT_RESUME=1.
    """
    _, store = store_for(redis_url)
    record = store.get(store.resolve(task_id))
    new = retry(store, record, queue=queue, gpus=gpus, resume=resume)
    snapshot = store.recorded_snapshot(record.id)
    if resume and not manifest.read(store.redis, new.id).entries:
        click.echo(
            f"warning: task {record.id} has no stored outputs; the retry starts afresh", err=True
        )
    _print_new(new, as_json)
    if record.extra.get(FAILED_ON) == "requirements":
        listed = snapshot.spec.requirements.path or "the requirements"
        flags = [f"-q {shlex.quote(new.options.queue)}"] if new.options.queue != "default" else []
        flags += [f"--gpus {new.options.gpus}"] if new.options.gpus else []
        again = shlex.join(record.argv)
        echo(
            f"overnight: note: {record.id} failed installing its requirements, and a retry "
            "reuses its recorded spec, requirements included: unless the package index was at "
            f"fault, {new.id} fails the same way. To run with fixed ones, fix {listed} and "
            f"enqueue again from the repository: overnight enqueue {' '.join([*flags, '--'])} "
            f"{again}",
            err=True,
        )


@click.command("clone")
@click.argument("task_id", metavar="ID")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change a param of the command (repeatable); a bare flag takes true or false.",
)
@add_param_option
@click.option("-m", "--note", default=None, help="Why this run exists (default: the task's).")
@click.option("--tag", "tags", multiple=True, help="A tag added to the task's (repeatable).")
@click.option(
    "--in-sweep", is_flag=True, help="The copy joins the task's sweep (its leaderboard shows it)."
)
@_NEW_QUEUE
@_NEW_GPUS
@json_option
@redis_option
def clone_command(
    task_id: str,
    settings: tuple[str, ...],
    add_param: bool,
    note: str | None,
    tags: tuple[str, ...],
    in_sweep: bool,
    queue: str | None,
    gpus: int | None,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Enqueue a copy of a task with params changed in its command; prints the new id.

    A --set name must be a param the task's command gives (an option or a NAME=VALUE word,
    - and _ alike), else --add-param adds it. The new task's `show` says `clone of ID`.

    \b
    overnight clone 3f9a --set lr=0.003 --set epochs=20 -q gpu -m "longer"
    """
    changes = [parse_setting(setting) for setting in settings]
    _, store = store_for(redis_url)
    record = store.get(store.resolve(task_id))
    new = clone(
        store, record, changes, add_param=add_param, note=note, tags=tags, in_sweep=in_sweep,
        queue=queue, gpus=gpus,
    )  # fmt: skip
    _print_new(new, as_json)


def _print_new(record: TaskRecord, as_json: bool) -> None:
    if as_json:
        echo_json(record_json(record))
    else:
        click.echo(record.id)


@click.command("gc")
@click.option(
    "--older-than",
    default=None,
    metavar="DURATION",
    help="Remove tasks that ended this long ago (default: retention_days, 30d).",
)
@click.option(
    "--outputs-older-than",
    default=None,
    metavar="DURATION",
    help="Also remove the output files of tasks that ended this long ago, keeping the tasks.",
)
@click.option("--corrupt", is_flag=True, help="Also remove records that cannot be decoded.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
@redis_option
def gc_command(
    older_than: str | None,
    outputs_older_than: str | None,
    corrupt: bool,
    dry_run: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Remove old ended tasks: records, specs, logs, RQ jobs and blobs nothing else uses."""
    config, store = store_for(redis_url)
    age = (
        parse_duration(older_than, what="--older-than")
        if older_than
        else config.retention_days * 86400
    )
    outputs = open_store(config.output_store, store.redis)
    report = collect(store, older_than=age, corrupt=corrupt, dry_run=dry_run, outputs=outputs)
    collect_studies(store, report, redis_url=config.redis_url, older_than=age, dry_run=dry_run)
    if outputs_older_than:
        outputs_age = parse_duration(outputs_older_than, what="--outputs-older-than")
        collect_outputs(store, report, older_than=outputs_age, dry_run=dry_run, outputs=outputs)
    if as_json:
        echo_json(to_jsonable(report))
        return
    verb = "would remove" if dry_run else "removed"
    line = f"{verb} {len(report.tasks)} task(s)"
    if not dry_run:
        line += f" and {report.specs_and_blobs} unused spec/blob key(s)"
        if report.output_blobs:
            line += f", {report.output_blobs} output file(s) no task uses"
    if outputs_older_than:
        line += f"; the outputs of {len(report.outputs_of)} more"
    if corrupt:
        line += f"; {len(report.corrupt)} corrupt record(s)"
    if report.studies:
        line += f"; {len(report.studies)} study(ies) with no task left"
    if report.journal_kept:
        line += (
            f" ({len(report.journal_kept)} left in Optuna's journal: run gc where the "
            "optimize extra is installed)"
        )
    click.echo(line)


def register(cli: click.Group, agent: click.Group) -> None:
    for command in (
        ls_command,
        show_command,
        logs_command,
        wait_command,
        cancel_command,
        retry_command,
        clone_command,
        gc_command,
    ):
        cli.add_command(command)
