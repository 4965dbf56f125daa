"""``overnight agent checkout SPEC DEST``: rebuild a recorded tree from a spec file or a task."""

from __future__ import annotations

from pathlib import Path

import click

from overnight.agent.config import load_agent_config
from overnight.commands.common import echo, redis_option, store_for
from overnight.errors import UsageError
from overnight.queue.keys import looks_like_id
from overnight.recorder.checkout import reconstruct
from overnight.spec import Snapshot


@click.command("checkout")
@click.argument("spec", metavar="SPEC")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--source", help="Clone commits from this URL or path instead of the recorded remote."
)
@redis_option
def checkout_command(spec: str, dest: Path, source: str | None, redis_url: str | None) -> None:
    """Rebuild the working tree of SPEC at DEST: a file from `snapshot --json`, or a task id.

    Like an agent, it fetches only network repo and submodule URLs unless the agent setting
    allow_local_repos (OVERNIGHT_ALLOW_LOCAL_REPOS=1) is set; --source may be a local path.
    """
    path = Path(spec)
    if not path.is_file() and looks_like_id(spec):
        _, store = store_for(redis_url)
        snap = store.load_snapshot(store.resolve(spec))
    else:
        snap = _read_snapshot(spec)
    # The spec may come from the queue: its URLs are fetched as an agent here would fetch them.
    allow_local = load_agent_config().allow_local_repos
    reconstruct(snap, dest, source=source, allow_local=allow_local)
    repo = snap.spec.repo
    extra = " + patch" if snap.spec.patch else ""
    extra += " + bundle" if snap.spec.bundle else ""
    extra += " + submodule changes" if snap.spec.submodule_patches else ""
    echo(f"rebuilt {repo.commit[:7]}{extra} at {dest}")


def _read_snapshot(spec: str) -> Snapshot:
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"{spec}: no such file or task; give a task id or a JSON file written by "
            "overnight snapshot --json"
        )
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {spec}: {exc.strerror}") from exc
    return Snapshot.from_json(text)


def register(cli: click.Group, agent: click.Group) -> None:
    agent.add_command(checkout_command)
