from __future__ import annotations

from pathlib import Path

import pytest

from overnight.agent.config import AgentConfig, load_agent_config
from overnight.errors import ConfigError


def test_flags_env_and_agent_section(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "redis_url: redis://top:1/0\n"
        "agent:\n  queues: [gpu, cpu]\n  grace: 5\n  git_tokens: {github.com: t0k}\n"
    )
    env = {"OVERNIGHT_HEARTBEAT_INTERVAL": "2", "OVERNIGHT_QUEUES": "env-q"}
    got = load_agent_config({"queues": ("flag-q",), "name": None}, env, cfg)
    assert got.queues == ("flag-q",)
    assert got.heartbeat_interval == 2.0
    assert got.grace == 5.0
    assert got.redis_url == "redis://top:1/0"  # the client's top-level key is the fallback
    assert got.git_tokens == {"github.com": "t0k"}
    assert got.name is None and got.agent_name


def test_agent_section_redis_url_wins_over_top_level(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis_url: redis://top:1/0\nagent:\n  redis_url: redis://agent:1/0\n")
    assert load_agent_config({}, {}, cfg).redis_url == "redis://agent:1/0"


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"env_mode": "conda"}, "env_mode"),
        ({"queues": ()}, "at least one queue"),
        ({"lost_ttl": 2.0, "heartbeat_interval": 5.0}, "lost_ttl"),
        ({"grace": 0.0}, "grace"),
        ({"window_end": "kill"}, "window_end .kill. is not one of finish, stop"),
        ({"notify": ("hooks.example.org/x",)}, "is not a URL"),
        ({"notify": ("https://h.org/x",), "digest": ("monday",)}, "mon 07:00"),
        ({"digest": ("mon 07:00",)}, "notify is not"),
    ],
)
def test_bad_settings_are_one_clear_error(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AgentConfig(**fields)  # type: ignore[arg-type]


def test_notify_digest_and_smtp_come_from_the_environment_the_password_unshown(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text('agent:\n  notify: ["mailto:lab@example.org"]\n  digest: "mon 07:00"\n')
    env = {"OVERNIGHT_SMTP_HOST": "mx.example.org", "OVERNIGHT_SMTP_PASSWORD": "hunter2"}
    config = load_agent_config({}, env, cfg)
    assert (config.notify, config.digest) == (("mailto:lab@example.org",), ("mon 07:00",))
    smtp = config.smtp
    assert (smtp.host, smtp.port, smtp.starttls, smtp.password) == (
        "mx.example.org",
        587,
        True,
        "hunter2",
    )
    assert "hunter2" not in repr(config) and "hunter2" not in repr(smtp)


def test_paths_expand_the_home_directory() -> None:
    config = AgentConfig(workspace_dir="~/ws")
    assert config.workspace_path == Path.home() / "ws"


def test_output_store_comes_from_the_agent_section_and_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("agent:\n  output_store: file:///mnt/shared/overnight\n")
    assert load_agent_config({}, {}, cfg).output_store == "file:///mnt/shared/overnight"
    assert AgentConfig().output_store is None  # outputs stay in Redis
    with pytest.raises(ConfigError, match="names a host"):
        load_agent_config({}, {"OVERNIGHT_OUTPUT_STORE": "file://nas/share"}, cfg)
