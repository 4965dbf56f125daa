"""What the client commands share: the ``--redis-url`` and ``--json`` flags, opening the store
(config read once, Redis checked, lost tasks reaped), and printing text, tables and JSON (task
data with its control characters made visible: :mod:`overnight.terminal`)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
import redis

from overnight.config import ClientConfig, load_client_config
from overnight.errors import ConnectionFailed, OvernightError, QueueError
from overnight.queue.connection import redact_url
from overnight.queue.failures import MAX_RETRIES
from overnight.queue.reaper import reap_lost
from overnight.queue.store import TaskStore
from overnight.terminal import visible

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


def redis_option(f: F) -> F:
    """``--redis-url`` (else ``OVERNIGHT_REDIS_URL``, else the config file, else localhost).

    The command is also wrapped so that Redis failing midway (a dropped connection, a key of the
    wrong type) ends it with one line and a named exit code, like any overnight error.
    """
    return click.option(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis to use: redis://[user:pass@]host:port/db, rediss://..., unix:///path "
        "(default: $OVERNIGHT_REDIS_URL, the config file, or redis://localhost:6379/0).",
    )(_redis_errors(f))


def _redis_errors(f: F) -> F:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            where = _shown_url(kwargs.get("redis_url"))
            raise ConnectionFailed(
                f"lost the connection to Redis{where}: {exc}; check that it is up and run the "
                "command again"
            ) from exc
        except redis.RedisError as exc:
            raise QueueError(f"Redis refused a command: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _shown_url(flag: str | None) -> str:
    """`` at URL`` (password hidden) for an error message, or nothing if it cannot be told."""
    try:
        return f" at {redact_url(load_config(flag).redis_url)}"
    except OvernightError:
        return ""


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def run_options(*, retries: int) -> Callable[[F], F]:
    """How each task runs: ``-q``, ``--gpus``, ``--image``, ``--timeout``, ``--grace`` and
    ``--retries`` (``retries``: its default), for the commands that enqueue (enqueue, optimize)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=retries,
            show_default=True,
            help=f"Times to run it again when it fails with a kind --retry-on names (default: "
            f"infrastructure: its agent lost, a full disk), at most {MAX_RETRIES}. "
            "`overnight retry ID` reruns any by hand.",
        )(f)
        for option in reversed(_RUN_OPTIONS):
            f = option(f)
        return f

    return decorate


_RUN_OPTIONS = (
    click.option(
        "-q", "--queue", default=None, help="Queue to put the task on (default: default)."
    ),
    click.option(
        "--gpus",
        type=click.IntRange(min=0),
        default=None,
        help="GPUs the task needs. Default: 0 on a CPU queue (one named in the cpu_queues "
        "setting, 'default' and 'cpu' unless set, or any name starting with 'cpu'), else 1; the "
        "default_gpus setting replaces this rule.",
    ),
    click.option("--image", default=None, help="Docker image to run in (docker agents)."),
    click.option("--timeout", default=None, metavar="DURATION", help="Stop it after, e.g. 8h."),
    click.option("--grace", default=None, metavar="DURATION", help="SIGTERM to SIGKILL delay."),
)


def add_param_option(f: F) -> F:
    """``--add-param``: a ``--sweep``/``--set`` name the command does not take is meant (added)."""
    return click.option(
        "--add-param",
        is_flag=True,
        help="Allow --sweep/--set names that are not options of the command: they are added "
        "(--NAME VALUE). Without it such a name is refused, with the closest one it has.",
    )(f)


def load_config(redis_url: str | None = None, **flags: Any) -> ClientConfig:
    return load_client_config(flags={"redis_url": redis_url, **flags})


def store_for(redis_url: str | None) -> tuple[ClientConfig, TaskStore]:
    """The config (flag > env > file) and a connected store; lost tasks are reaped once."""
    config = load_config(redis_url)
    store = TaskStore.from_config(config)
    reap_lost(store)
    return config, store


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums and tuples as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def echo(line: str, *, err: bool = False) -> None:
    """Print one line that may hold a task's data (its name, notes, error): control characters,
    newlines among them, are written as visible escapes, so it stays one line."""
    click.echo(visible(line), err=err)


def echo_lines(lines: Iterable[str]) -> None:
    """:func:`echo` each line."""
    for line in lines:
        echo(line)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, sort_keys=True))


def console() -> Console:
    """A console on the current stdout; wide when it is not a terminal, so pipes get whole rows."""
    from rich.console import Console  # here, not above: commands that print no table skip rich

    out = sys.stdout
    return Console(file=out, width=None if out.isatty() else 250, highlight=False)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(
            *(Text(visible(cell)) for cell in row)
        )  # Text: no rich markup in user strings
    console().print(table)
