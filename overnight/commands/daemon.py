"""``overnight agent daemon``: serve queues on this machine until stopped.

Configuration is resolved here, once (flags > ``OVERNIGHT_*`` > config file > defaults), and the
environment (venv or docker) and GPU inventory are chosen here; the daemon gets typed objects.
``--help`` lists the settings that have no flag; a bad flag is one line, like every other error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

import click

from overnight.agent.config import ENV_MODES, WINDOW_ENDS, AgentConfig, load_agent_config
from overnight.agent.environments.base import Environment
from overnight.agent.gpus.inventory import GPUInventory, open_inventory, parse_gpu_list
from overnight.agent.run.isolation import (
    WORKSPACE_FOLDERS,
    TaskUsers,
    check_agent_is_root,
    keep_private,
    private_folders,
)
from overnight.errors import ConfigError

log = logging.getLogger(__name__)


def make_environment(
    config: AgentConfig,
    host_env: Mapping[str, str],
    gpu_ids: Sequence[str] = (),
    task_users: TaskUsers | None = None,
) -> Environment:
    """The environment named by ``config.env_mode`` (auto: docker when an engine answers, and
    can hand the agent's GPUs to containers); ``host_env`` is the agent's own environment, of
    which tasks see only an allowlist (:mod:`overnight.agent.run.taskenv`), and ``task_users`` the
    uids venv tasks run as (None: the agent's own)."""
    client = _docker_client() if config.env_mode in ("auto", "docker") else None
    if config.env_mode == "docker" and client is None:
        raise ConfigError(
            "--env-mode docker: no Docker engine answers; start dockerd (or set DOCKER_HOST), "
            "or use --env-mode venv"
        )
    if client is not None:
        from overnight.agent.environments.docker.environment import (
            DockerEnvironment,
            cannot_hand_gpus,
        )

        docker_env = DockerEnvironment.from_config(client, config, host_env)
        docker_env.check_engine()
        problem = docker_env.gpu_problem(gpu_ids[0]) if gpu_ids else None
        if problem is None:
            return docker_env
        if config.env_mode == "docker":
            raise ConfigError(f"--env-mode docker: {cannot_hand_gpus(problem)}")
        log.warning(
            "the Docker engine cannot hand GPUs to containers (%s); tasks run in venvs", problem
        )
    from overnight.agent.environments.venv.environment import VenvEnvironment

    return VenvEnvironment.from_config(config, host_env, task_users=task_users)


def _docker_client() -> Any:
    if not _socket_answers(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")):
        return None  # checked first: docker-py leaks the socket it fails to connect
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception:  # no socket, no permission, engine down: all mean "no docker here"
        return None
    return client


def _socket_answers(host: str) -> bool:
    """Whether a ``unix://`` Docker host accepts a connection (other kinds: left to docker-py)."""
    if not host.startswith("unix://"):
        return True
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        try:
            sock.connect(host.removeprefix("unix://"))
        except OSError:
            return False
    return True


def _has_password(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        return bool(parts.password or query.get("password") or query.get("sentinel_password"))
    except ValueError:
        return False


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    pairs = [item.partition("=") for item in items]
    for name, sep, _ in pairs:
        if not (name and sep):
            raise ConfigError(f"--installer-env {name!r} is not NAME=VALUE; e.g. PIP_INDEX_URL=...")
    return {name: value for name, _, value in pairs}


def _gpus(config: AgentConfig) -> tuple[tuple[str, ...], GPUInventory | None]:
    if config.gpus.strip().lower() in ("", "none"):
        return (), None
    inventory = open_inventory()
    return parse_gpu_list(config.gpus, inventory), inventory


@click.command("daemon")
@click.option("-q", "--queue", "queues", multiple=True, help="Queue to serve; repeat, first first.")
@click.option("--name", help="Agent name (default: <hostname>-<pid>).")
@click.option("--gpus", help="GPUs to use: all, none, 0,1 or 0-3 (default: all found).")
@click.option("--cpu-slots", type=int, help="CPU-only tasks run at once (default 1).")
@click.option(
    "--gpu-foreign-mb",
    type=float,
    help="Hold back a GPU when others' processes use more memory on it (default 1024).",
)
@click.option("--monitor-interval", type=float, help="Seconds between resource samples (5).")
@click.option(
    "--report-interval",
    type=float,
    help="Seconds between writes of a running task's peak and mean to its record (60).",
)
@click.option(
    "--env-mode",
    type=click.Choice(ENV_MODES),
    help="Where tasks run (default auto: docker when an engine answers, else venv).",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--keep-workspaces", is_flag=True, default=None, help="Keep each task's tree.")
@click.option("--redis-url", help="Redis to serve (default: $OVERNIGHT_REDIS_URL or config).")
@click.option("--workspace-dir", help="Where task trees and git mirrors live.")
@click.option("--cache-dir", help="Where environments are cached.")
@click.option("--max-envs", type=int, help="Environments kept; least recently used go (20).")
@click.option("--max-env-gb", type=float, help="Disk the environments may use, in GB (no limit).")
@click.option("--grace", type=float, help="Seconds between SIGTERM and SIGKILL on a stop.")
@click.option("--uptime", multiple=True, help='Take new tasks only then: "fri 19:00-mon 07:00".')
@click.option("--downtime", multiple=True, help='Take no new tasks then: "mon-fri 09:00-18:00".')
@click.option(
    "--window-end",
    type=click.Choice(WINDOW_ENDS),
    help="When a window closes: let running tasks finish (default), or stop them (SIGTERM, "
    "grace) and requeue them at the front.",
)
@click.option("--default-image", help="Docker: base image of tasks that name none.")
@click.option(
    "--docker-user", metavar="UID:GID",
    help="Docker: user of tasks and builds (default: the agent's; 65534:65534 for root).",
)  # fmt: skip
@click.option("--docker-network", help="Docker: network of task containers (host, none, ...).")
@click.option(
    "--docker-mount", "docker_mounts", multiple=True, metavar="HOST:CONTAINER[:ro]",
    help="Docker: mount this in every task container; repeat.",
)  # fmt: skip
@click.option("--docker-shm-size", help="Docker: /dev/shm of task containers (default 2g).")
@click.option(
    "--ca-bundle", "docker_ca_bundle", metavar="PATH|system|none",
    help="Docker: CA bundle for builds and tasks (default system: the host's, when present).",
)  # fmt: skip
@click.option(
    "--installer-env", "docker_installer_env", multiple=True, metavar="NAME=VALUE",
    help="Docker: pip/uv variable for builds, e.g. PIP_INDEX_URL=...; repeat.",
)  # fmt: skip
@click.option("--pip-conf", "docker_pip_conf", help="Docker: pip.conf for builds.")
@click.option("--uv-toml", "docker_uv_toml", help="Docker: uv.toml for builds.")
@click.option("--build-network", "docker_build_network", help="Docker: network of builds.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: debug).")
def daemon_command(queues: tuple[str, ...], burst: bool, verbose: int, **flags: Any) -> None:
    """Take tasks from QUEUEs, rebuild their tree and environment, run them, report back.

    SIGTERM (or Ctrl-C) once: finish the running tasks, take no new ones. Twice: stop the
    running tasks and put them back at the front of their queues.
    """
    from overnight.agent.service.daemon import create_daemon
    from overnight.terminal import VisibleFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for name in ("rq", "rq.worker", "rq.queue", "rq.job"):
        logging.getLogger(name).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    flags["queues"] = queues or None
    for name in ("uptime", "downtime", "docker_mounts"):
        flags[name] = flags[name] or None
    flags["docker_installer_env"] = _pairs(flags["docker_installer_env"]) or None
    if _has_password(flags.get("redis_url")):
        log.warning(
            "the Redis password in --redis-url is visible to every user of this host (ps, "
            "/proc/<pid>/cmdline); set OVERNIGHT_REDIS_URL or redis_url in the config file instead"
        )
    config = load_agent_config(flags)
    users = TaskUsers.parse(config.task_user) if config.task_user else None
    check_agent_is_root(users)
    if users is not None:
        keep_private(users)
    gpu_ids, inventory = _gpus(config)
    if users is not None:
        users.check_slots(config.cpu_slots + len(gpu_ids))
    environment = make_environment(config, os.environ, gpu_ids, users)
    workspace, cache = config.workspace_path, config.cache_path
    private_folders(
        (workspace, cache, config.spill_path),
        shared={workspace: WORKSPACE_FOLDERS, cache: ()},
        users=users,
    )
    daemon = create_daemon(config, environment, gpu_ids=gpu_ids, inventory=inventory)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.run(burst=burst)


def _unflagged_settings(command: click.Command) -> str:
    flagged = {param.name for param in command.params}
    names = [f.name for f in dataclasses.fields(AgentConfig) if f.name not in flagged]
    return (
        "Settings come from flags, OVERNIGHT_<SETTING> variables (OVERNIGHT_LOST_TTL=60) or the "
        "agent: section of the config file ($OVERNIGHT_CONFIG), in that order. These have no "
        f"flag: {', '.join(names)} (see overnight/agent/config.py)."
    )


daemon_command.epilog = _unflagged_settings(daemon_command)


def register(cli: click.Group, agent: click.Group) -> None:
    agent.add_command(daemon_command)
