"""Configuration, read once at the edge and passed down as typed objects.

Precedence for every setting: command-line flag > ``OVERNIGHT_<NAME>`` environment variable >
YAML config file > default. The file is ``$OVERNIGHT_CONFIG`` or ``~/.config/overnight/config.yaml``;
top-level keys configure the client, the ``agent:`` section configures agents.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from overnight.errors import ConfigError, UsageError
from overnight.notify.targets import parse_targets
from overnight.outputs.locations import check_output_store

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Settings for commands run on a user's machine."""

    redis_url: str = DEFAULT_REDIS_URL
    default_queue: str = "default"
    max_snapshot_mb: float = 20.0
    max_untracked_file_mb: float = 5.0
    log_cap_mb: float = 50.0
    retention_days: float = 30.0
    # GPUs a task asks for without --gpus: default_gpus when set, else 0 on a CPU queue (one in
    # cpu_queues or whose name starts with "cpu") and 1 on any other queue.
    default_gpus: int | None = None
    cpu_queues: tuple[str, ...] = ("default", "cpu")
    outputs: tuple[str, ...] = ()  # output globs every enqueued task records, besides --outputs
    # where agents keep outputs, for pull and gc: unset or "redis" (the queue's Redis), or
    # file:///mnt/shared/overnight, sftp://host/path, s3://bucket/prefix (overnight.outputs)
    output_store: str | None = None
    # what `overnight ui` asks for when it listens on an address other than 127.0.0.1/localhost
    ui_token: str | None = None
    # where enqueued tasks tell their failure and their sweep's end (enqueue --notify adds):
    # https:// webhooks (Slack-compatible), ntfy+https://HOST/TOPIC, mailto:ADDRESS
    notify: tuple[str, ...] = ()
    notify_metric: str | None = None  # a sweep's end names its best run by it: loss, -acc:max

    def __post_init__(self) -> None:
        check_output_store(self.output_store)
        try:
            parse_targets(list(self.notify))
        except UsageError as exc:
            raise ConfigError(f"setting notify: {exc}") from None

    def gpus_for(self, queue: str) -> int:
        """GPUs a task on ``queue`` asks for when none are named: ``default_gpus`` when set,
        else 0 on a CPU queue (listed in ``cpu_queues``, or named ``cpu...``) and 1 on others."""
        if self.default_gpus is not None:
            if self.default_gpus < 0:
                raise ConfigError(f"default_gpus must be 0 or more, not {self.default_gpus}")
            return self.default_gpus
        cpu = queue in self.cpu_queues or queue.lower().startswith("cpu")
        return 0 if cpu else 1


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the YAML config file is looked for."""
    env = os.environ if environ is None else environ
    explicit = env.get("OVERNIGHT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "overnight" / "config.yaml"


def load_file(path: Path | None) -> dict[str, Any]:
    """Read a YAML config file; a missing file is an empty config."""
    if path is None or not path.exists():
        return {}
    import yaml  # only with a file to read: most commands run without one, and start faster

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}; fix or remove it") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of settings, not {type(data).__name__}"
        )
    return data


def _coerce(name: str, value: Any, annotation: Any, origin: str) -> Any:
    """Turn a raw value (a string from the environment, a YAML scalar) into the field's type."""
    hint = annotation
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint in (int, float, str):
            return hint(value)
        if typing.get_origin(hint) in (tuple, list):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if typing.get_origin(hint) is dict:
            if isinstance(value, str):
                pairs = (p.split("=", 1) for p in value.split(",") if p.strip())
                return {k.strip(): v.strip() for k, v in pairs}
            return {str(k): str(v) for k, v in dict(value).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r} from {origin} has invalid value {value!r}") from exc
    return value


def resolve(
    cls: type[T],
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    file_section: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` (a dataclass) from flags > environment > file section > defaults.

    A flag whose value is ``None`` counts as not given.
    """
    env = os.environ if environ is None else environ
    section = dict(file_section or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in config file: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.name
        env_name = f"OVERNIGHT_{name.upper()}"
        if flags is not None and flags.get(name) is not None:
            values[name] = _coerce(name, flags[name], hints[name], "the command line")
        elif env_name in env:
            values[name] = _coerce(name, env[env_name], hints[name], f"${env_name}")
        elif name in section:
            values[name] = _coerce(name, section[name], hints[name], "the config file")
    return cls(**values)


def load_client_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> ClientConfig:
    """The client's settings, with the file's top-level keys (the ``agent`` section excluded)."""
    data = load_file(path if path is not None else config_path(environ))
    section = {k: v for k, v in data.items() if k != "agent"}
    return resolve(ClientConfig, flags, environ, section)


def agent_section(
    environ: Mapping[str, str] | None = None, path: Path | None = None
) -> dict[str, Any]:
    """The ``agent:`` section of the config file, for :func:`resolve` with the agent's settings."""
    data = load_file(path if path is not None else config_path(environ))
    section = data.get("agent") or {}
    if not isinstance(section, dict):
        raise ConfigError("the 'agent' section of the config file must be a mapping")
    return section
