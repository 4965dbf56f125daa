"""``overnight ui``: the web page over the queue (:mod:`overnight.ui`), served by uvicorn.

Its dependencies are the ``ui`` extra; without them the command says how to install them, and
nothing else of the CLI imports them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from overnight.agent.config import load_agent_config
from overnight.commands.common import redis_option, store_for
from overnight.errors import UiError

EXTRA = ("starlette", "uvicorn", "jinja2", "multipart")


def missing_extra() -> list[str]:
    """The ``ui`` extra's modules this Python lacks."""
    return [name for name in EXTRA if importlib.util.find_spec(name) is None]


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--read-only", is_flag=True, help="Serve no action: no cancel, retry or clone.")
@click.option(
    "--generate-token",
    is_flag=True,
    help="On an address beyond this machine without a ui_token setting: make one and print it.",
)
@redis_option
def ui_command(
    host: str, port: int, read_only: bool, generate_token: bool, redis_url: str | None
) -> None:
    """Serve a web page of the queue: runs, logs, code, metrics, agents, and actions on them."""
    lacking = missing_extra()
    if lacking:
        raise UiError(
            f"overnight ui needs its extra (missing: {', '.join(lacking)}); install it with "
            "pip install 'overnight[ui]'"
        )
    import uvicorn

    from overnight.ui.app import UiSettings, create_app
    from overnight.ui.security import Access

    config, store = store_for(redis_url)
    access = Access.for_address(
        host, token=config.ui_token, generate=generate_token, read_only=read_only
    )
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if access.token is not None:
        note = "" if config.ui_token else " (a generated token: it changes on each start)"
        click.echo(f"overnight ui: open {url}?token={access.token}{note}", err=True)
    else:
        click.echo(f"overnight ui: open {url}", err=True)
    repo = Path.cwd()
    settings = UiSettings(
        store=store,
        access=access,
        output_store=config.output_store,
        local_repo=repo if (repo / ".git").exists() else None,
        allow_local=load_agent_config().allow_local_repos,
    )
    # Followed logs are streams that last as long as their task: stop waiting for them soon.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(ui_command)
