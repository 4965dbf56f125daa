"""An agent's settings: one typed object, resolved once at the command line and passed down.

Every field can come from a flag, an ``OVERNIGHT_<FIELD>`` variable or the ``agent:`` section of
the config file (see :mod:`overnight.config`); ``redis_url`` also falls back to the file's
top-level key, which the client uses.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from overnight.config import DEFAULT_REDIS_URL, agent_section, config_path, load_file, resolve
from overnight.errors import ConfigError, UsageError
from overnight.notify.schedule import DigestSchedule
from overnight.notify.targets import SmtpSettings, parse_targets
from overnight.outputs.locations import check_output_store

ENV_MODES = ("auto", "venv", "docker")  # auto: docker when an engine answers, else venv
WINDOW_ENDS = ("finish", "stop")  # at a window's close: let runs finish, or stop and requeue them


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """How one agent serves its queues."""

    redis_url: str = DEFAULT_REDIS_URL
    name: str | None = None  # default: <hostname>-<pid>
    queues: tuple[str, ...] = ("default",)  # the first named has priority
    gpus: str = "all"  # "all" (those NVML reports; none found: a CPU agent), "none", "0,1", "0-3"
    cpu_slots: int = 1  # tasks asking for no GPU that may run at once
    gpu_foreign_mb: float = 1024.0  # a GPU with more memory held by others is not handed out
    env_mode: str = "auto"
    workspace_dir: str = "~/.cache/overnight/workspaces"
    cache_dir: str = "~/.cache/overnight/envs"
    spill_dir: str = "~/.cache/overnight/spill"
    keep_workspaces: bool = False
    # where tasks' outputs are stored: unset or "redis" (the queue's Redis), or an URL:
    # file:///mnt/shared/overnight, sftp://host/path, s3://bucket/prefix (overnight.outputs)
    output_store: str | None = None
    output_sync_interval: float = 300.0  # seconds between syncs of a running task's outputs
    max_output_mb: float = 200.0  # outputs kept per task in the Redis store; past it, notes
    grace: float = 30.0  # seconds between SIGTERM and SIGKILL when a task is stopped
    heartbeat_interval: float = 5.0  # seconds between a running task's heartbeats
    lost_ttl: float = 30.0  # a task whose heartbeat is older than this is lost
    reap_interval: float = 10.0  # seconds between looks for other agents' lost tasks
    stray_interval: float = 60.0  # seconds between looks for task processes of dead agents here
    fault_pause: float = 300.0  # seconds without new tasks after a full disk met while preparing
    control_interval: float = 0.5  # seconds between looks for cancel requests
    dequeue_timeout: float = 1.0  # longest blocking pop before housekeeping runs again
    monitor_interval: float = 5.0  # seconds between resource samples of a running task
    report_interval: float = 60.0  # seconds between writes of a running task's report to its record
    max_backoff: float = 30.0  # longest wait between reconnect attempts
    log_buffer_mb: float = 8.0  # log lines held in memory per task during an outage
    log_cap_mb: float = 50.0
    max_envs: int = 20
    max_mirrors: int = 20  # git mirrors kept in workspace_dir; least recently used go
    max_env_gb: float | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # added for every task
    pass_env: tuple[str, ...] = ()  # more of the agent's variables tasks see: names, globs (HF_*)
    task_user: str | None = None  # venv tasks run as: a user, UID[:GID], UID-UID (root agents)
    git_tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # host -> token
    git_ssh_command: str | None = None
    allow_local_repos: bool = False  # also fetch local paths and file:// (repos and submodules)
    default_image: str | None = None  # docker mode: image when the task names none
    docker_network: str | None = None
    docker_mounts: tuple[str, ...] = ()  # extra mounts, HOST:CONTAINER[:ro]
    docker_shm_size: str = "2g"
    docker_image_repo: str = "overnight-env"  # environment images are <repo>:<key>
    # a volume of package downloads shared by all builds (default none: each build its own); any
    # build's requirements can plant packages there for the next: only for a single-user host
    docker_cache_volume: str | None = None
    docker_user: str | None = None  # UID:GID of tasks and builds (default: agent's; root's: 65534)
    docker_ca_bundle: str = "system"  # PEM for builds and tasks: a path, system (host's), none
    docker_installer_env: dict[str, str] = dataclasses.field(default_factory=dict)  # PIP_*, UV_*
    docker_pip_conf: str | None = None  # pip.conf for builds (default: $PIP_CONFIG_FILE)
    docker_uv_toml: str | None = None  # uv.toml for builds (default: $UV_CONFIG_FILE)
    docker_build_network: str | None = None  # network of install containers (default: engine's)
    uptime: tuple[str, ...] = ()  # windows when new tasks are taken: "fri 19:00-mon 07:00"
    downtime: tuple[str, ...] = ()  # windows when they are not
    window_end: str = "finish"  # at the close: "finish" running tasks, or "stop" (and requeue)
    # where this agent tells of agents lost and sends the digest (overnight.notify.targets)
    notify: tuple[str, ...] = ()
    digest: tuple[str, ...] = ()  # when `overnight summary` is sent to notify: "mon 07:00"
    notify_tries: int = 3  # tries of one delivery, the wait doubling from notify_backoff
    notify_backoff: float = 5.0
    smtp_host: str | None = None  # the SMTP server mailto: targets are sent through
    smtp_port: int = 587
    smtp_from: str | None = None
    smtp_starttls: bool = True
    smtp_user: str | None = None
    # best from $OVERNIGHT_SMTP_PASSWORD; never written to Redis nor shown
    smtp_password: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.env_mode not in ENV_MODES:
            raise ConfigError(
                f"env_mode {self.env_mode!r} is not one of {', '.join(ENV_MODES)}; "
                "pass --env-mode venv, docker or auto"
            )
        if self.window_end not in WINDOW_ENDS:
            raise ConfigError(
                f"window_end {self.window_end!r} is not one of {', '.join(WINDOW_ENDS)}; "
                "pass --window-end finish or stop"
            )
        check_output_store(self.output_store)
        try:
            parse_targets(list(self.notify))
            DigestSchedule.parse(self.digest)
        except UsageError as exc:
            raise ConfigError(f"agent setting: {exc}") from None
        if self.digest and not self.notify:
            raise ConfigError(
                "digest is set but notify is not; name where to send it: --notify URL"
            )
        if not self.queues:
            raise ConfigError("an agent needs at least one queue; pass --queue NAME")
        if self.max_mirrors < 1:
            raise ConfigError(f"max_mirrors must be at least 1, not {self.max_mirrors}")
        if self.cpu_slots < 1:
            raise ConfigError(f"cpu_slots must be at least 1, not {self.cpu_slots}")
        if self.lost_ttl <= self.heartbeat_interval:
            raise ConfigError(
                f"lost_ttl ({self.lost_ttl:g} s) must exceed heartbeat_interval "
                f"({self.heartbeat_interval:g} s), or live tasks would be declared lost"
            )
        if self.gpu_foreign_mb < 0:
            raise ConfigError(
                f"gpu_foreign_mb must be 0 or more MB, not {self.gpu_foreign_mb:g}; "
                "pass e.g. --gpu-foreign-mb 1024"
            )
        for field in (
            "grace",
            "heartbeat_interval",
            "control_interval",
            "dequeue_timeout",
            "monitor_interval",
            "report_interval",
            "stray_interval",
            "fault_pause",
            "output_sync_interval",
        ):
            if getattr(self, field) <= 0:
                raise ConfigError(f"{field} must be a positive number of seconds")

    @property
    def agent_name(self) -> str:
        return self.name or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def workspace_path(self) -> Path:
        return Path(self.workspace_dir).expanduser()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()

    @property
    def spill_path(self) -> Path:
        return Path(self.spill_dir).expanduser()

    @property
    def output_cap_bytes(self) -> int | None:
        """The per-task cap on outputs: for the Redis store only (other stores have room)."""
        if self.output_store not in (None, "", "redis"):
            return None
        return max(0, int(self.max_output_mb * 1024 * 1024))

    @property
    def smtp(self) -> SmtpSettings:
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            sender=self.smtp_from or "",
            starttls=self.smtp_starttls,
            user=self.smtp_user,
            password=self.smtp_password,
        )

    @property
    def log_buffer_bytes(self) -> int:
        return max(1, int(self.log_buffer_mb * 1024 * 1024))


def load_agent_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> AgentConfig:
    """The agent's settings: flags > ``OVERNIGHT_*`` > the file's ``agent:`` section > defaults."""
    file = path if path is not None else config_path(environ)
    section = dict(agent_section(environ, file))
    top_url = load_file(file).get("redis_url")
    if top_url is not None and "redis_url" not in section:
        section["redis_url"] = top_url
    return resolve(AgentConfig, flags, environ, section)
