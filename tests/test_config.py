from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from overnight.config import ClientConfig, load_client_config, resolve
from overnight.errors import ConfigError


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis_url: redis://file:1/0\nmax_snapshot_mb: 7\ndefault_queue: fileq\n")
    env = {"OVERNIGHT_REDIS_URL": "redis://env:1/0", "OVERNIGHT_MAX_SNAPSHOT_MB": "9"}
    got = load_client_config({"redis_url": "redis://flag:1/0", "default_queue": None}, env, cfg)
    assert got.redis_url == "redis://flag:1/0"
    assert got.max_snapshot_mb == 9.0
    assert got.default_queue == "fileq"
    assert got.log_cap_mb == ClientConfig().log_cap_mb


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis_ur: x\n")
    with pytest.raises(ConfigError, match="redis_ur"):
        load_client_config({}, {}, cfg)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"\$OVERNIGHT_MAX_SNAPSHOT_MB"):
        resolve(ClientConfig, {}, {"OVERNIGHT_MAX_SNAPSHOT_MB": "lots"}, {})


def test_malformed_yaml_is_one_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis_url: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_client_config({}, {}, cfg)


@pytest.mark.parametrize(
    ("settings", "queue", "gpus"),
    [
        ({}, "default", 0),
        ({}, "cpu", 0),
        ({}, "CPU-big", 0),
        ({}, "gpu", 1),
        ({}, "a100", 1),
        ({"cpu_queues": ("batch",)}, "batch", 0),
        ({"cpu_queues": ("batch",)}, "default", 1),  # the list replaces the default one
        ({"cpu_queues": ("batch",)}, "cpu-small", 0),  # cpu... is always a CPU queue
        ({"default_gpus": 2}, "cpu", 2),
        ({"default_gpus": 0}, "gpu", 0),
    ],
)
def test_gpus_default_by_queue(settings: dict[str, Any], queue: str, gpus: int) -> None:
    assert ClientConfig(**settings).gpus_for(queue) == gpus


def test_gpus_default_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("cpu_queues: [batch, etl]\n")
    config = load_client_config(environ={}, path=path)
    assert (config.gpus_for("etl"), config.gpus_for("default")) == (0, 1)
    with pytest.raises(ConfigError, match="default_gpus must be 0 or more"):
        ClientConfig(default_gpus=-1).gpus_for("gpu")


def test_notify_comes_from_the_file_and_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("notify: [https://hooks.slack.com/services/T/B/SECRET]\nnotify_metric: loss\n")
    config = load_client_config({}, {}, cfg)
    assert config.notify == ("https://hooks.slack.com/services/T/B/SECRET",)
    assert config.notify_metric == "loss"
    with pytest.raises(ConfigError) as bad:
        load_client_config({}, {"OVERNIGHT_NOTIFY": "gopher://h.org/SECRET"}, cfg)
    assert str(bad.value).startswith("setting notify: notify target gopher://h.org/… is not a URL")
    assert "SECRET" not in str(bad.value)


def test_output_store_comes_from_the_file_and_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_store: sftp://storage/srv/overnight\n")
    assert load_client_config({}, {}, cfg).output_store == "sftp://storage/srv/overnight"
    assert load_client_config({}, {}, tmp_path / "none.yaml").output_store is None
    with pytest.raises(ConfigError, match="output_store 'ftp://storage/x' is not"):
        load_client_config({}, {"OVERNIGHT_OUTPUT_STORE": "ftp://storage/x"}, cfg)
