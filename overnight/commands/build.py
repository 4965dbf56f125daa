"""``overnight agent build ID|SPEC --tag IMAGE``: a task as a standalone Docker image.

The image holds the task's environment (the same cached environment image an agent in Docker
mode on this machine runs it from, built with the agent's settings) and its reconstructed tree at
/workspace, with the recorded command, working directory and env; plain ``docker run IMAGE``
reproduces the run without overnight.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from overnight.agent.config import AgentConfig, load_agent_config
from overnight.agent.progress import ProgressLine
from overnight.commands.common import echo, redis_option, store_for
from overnight.errors import ConfigError, UsageError
from overnight.recorder.checkout import reconstruct
from overnight.spec import Snapshot


def load_task(task: str, redis_url: str | None) -> tuple[Snapshot, str | None, str | None]:
    """The snapshot, task id and image option of ``task``: a JSON file or a task id (prefix)."""
    path = Path(task)
    if path.is_file():
        try:
            return Snapshot.from_json(path.read_bytes()), None, None
        except OSError as exc:
            raise UsageError(f"cannot read {task}: {exc.strerror}") from exc
    if task.endswith(".json") or "/" in task:
        raise UsageError(f"{task}: no such file; give a task id or a file from snapshot --json")
    _, store = store_for(redis_url)
    task_id = store.resolve(task)
    return store.load_snapshot(task_id), task_id, store.get(task_id).options.image


def build_standalone(
    snapshot: Snapshot,
    tag: str,
    *,
    log: ProgressLine,
    config: AgentConfig,
    image: str | None = None,
    task_id: str | None = None,
    source: str | None = None,
) -> str:
    """Build the standalone image ``tag`` for ``snapshot``; returns its id.

    The environment comes from the image cache an agent with ``config`` on this host uses
    (default image, image repository, package cache, CA bundle, installer settings); the tree is
    fetched as that agent would (``allow_local_repos``).
    """
    import docker
    import docker.errors

    from overnight.agent.environments.docker.build import commit_standalone
    from overnight.agent.environments.docker.environment import DockerEnvironment

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise ConfigError(
            f"no Docker engine answers ({exc}); start dockerd or set DOCKER_HOST"
        ) from exc
    try:
        env = DockerEnvironment.from_config(client, config, os.environ)
        prepared = env.prepare(snapshot.spec, log, lambda: False, image=image)
        for warning in prepared.warnings:
            log(f"warning: {warning}")
        with tempfile.TemporaryDirectory(prefix="overnight-build-") as tmp:
            tree = Path(tmp) / "tree"
            log(f"reconstructing {snapshot.spec.repo.commit[:7]}")
            reconstruct(snapshot, tree, source=source, allow_local=config.allow_local_repos)
            labels = {"overnight.commit": snapshot.spec.repo.commit}
            if task_id:
                labels["overnight.task"] = task_id
            return commit_standalone(
                client,
                prepared.details["image_id"],
                tree,
                tag,
                argv=snapshot.spec.argv,
                workdir=snapshot.spec.workdir,
                env=snapshot.spec.env,
                labels=labels,
            )
    finally:
        client.close()


@click.command("build")
@click.argument("task", metavar="ID|SPEC")
@click.option("-t", "--tag", required=True, metavar="IMAGE", help="Name of the image to build.")
@click.option(
    "--image", help="Base image (default: the task's, else the agent's, else python:X.Y-slim)."
)
@click.option("--source", help="Clone commits from this URL or path instead of the recorded one.")
@click.option(
    "--ca-bundle",
    "docker_ca_bundle",
    metavar="PATH|system|none",
    help="CA bundle for installs behind an inspecting proxy (default: the agent's setting).",
)
@click.option("--env-repo", "docker_image_repo", hidden=True)
@click.option("--cache-volume", "docker_cache_volume", hidden=True)
@redis_option
def build_command(
    task: str, tag: str, image: str | None, source: str | None, redis_url: str | None, **flags: Any
) -> None:
    """Build a standalone image of task ID (or a SPEC file from `snapshot --json`).

    The environment is built (or found) as an agent on this machine would: its docker settings
    (default image, CA bundle, pip/uv configuration) apply.

    \b
    overnight agent build 3f2a --tag exp:lr-0.01 && docker run exp:lr-0.01
    """
    config = load_agent_config(flags)
    snapshot, task_id, task_image = load_task(task, redis_url)
    image_id = build_standalone(
        snapshot,
        tag,
        log=lambda line: echo(line, err=True),
        config=dataclasses.replace(config, name="overnight-build"),
        image=image or task_image,
        task_id=task_id,
        source=source,
    )
    click.echo(f"built {tag} ({image_id[7:19]}); run it with: docker run {tag}")


def register(cli: click.Group, agent: click.Group) -> None:
    agent.add_command(build_command)
