"""``overnight agent daemon`` as a user starts it: flags, config and one-line errors."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import click
import pynvml
import pytest

from overnight.agent.config import AgentConfig, load_agent_config
from overnight.commands.daemon import _has_password
from overnight.errors import ConfigError, ExitCode
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import (
    LOCAL_REPOS,
    agent_config,
    enqueue,
    log_text,
    start_agent,
    wait_status,
)
from tests.fixtures.cli import run_cli
from tests.fixtures.fakenvml import FakeDriver, FakeGPU, FakeProcess
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import wait_output
from tests.fixtures.services import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    return {
        "OVERNIGHT_WORKSPACE_DIR": str(tmp_path / "ws"),
        "OVERNIGHT_CACHE_DIR": str(tmp_path / "envs"),
        "OVERNIGHT_SPILL_DIR": str(tmp_path / "spill"),
        **LOCAL_REPOS,
    }


def test_burst_on_empty_queues_exits_cleanly(redis_url: str, dirs: dict[str, str]) -> None:
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none",
        OVERNIGHT_REDIS_URL=redis_url, env=dirs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "serving q" in proc.stderr
    assert "this Redis keeps nothing on disk: a restart loses every task" in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        (["--redis-url", "redis://127.0.0.1:{port}/0"], {}, ExitCode.CONNECTION, "cannot reach"),
        (["--gpus", "7"], {}, ExitCode.USAGE, "GPU 7 is not present"),
        (["--env-mode", "docker"], {"DOCKER_HOST": "unix:///nonexistent.sock"}, ExitCode.CONFIG,
         "no Docker engine answers"),
        ([], {"OVERNIGHT_LOST_TTL": "1", "OVERNIGHT_HEARTBEAT_INTERVAL": "5"}, ExitCode.CONFIG,
         "lost_ttl"),
        (["--gpu-foreign-mb", "-1"], {}, ExitCode.CONFIG, "--gpu-foreign-mb 1024"),
        (["--monitor-interval", "0"], {}, ExitCode.CONFIG, "monitor_interval"),
        (["--uptime", "fri 25:00-mon 07:00"], {}, ExitCode.USAGE, "not a time of day"),
        ([], {"OVERNIGHT_TASK_USER": "root"}, ExitCode.CONFIG, "name an unprivileged user"),
        ([], {"OVERNIGHT_TASK_USER": "no-such-user-xyz"}, ExitCode.CONFIG, "e.g. task_user:"),
        (["--cpu-slots", "3"], {"OVERNIGHT_TASK_USER": "60000-60001"}, ExitCode.CONFIG,
         "a uid per slot"),
        ([], {"OVERNIGHT_TASK_USER": "nobody"}, ExitCode.CONFIG, "that user cannot enter"),
    ],
)  # fmt: skip
def test_bad_setup_is_one_line_naming_the_fix(
    redis_url: str,
    dirs: dict[str, str],
    args: list[str],
    env: dict[str, str],
    code: ExitCode,
    words: str,
) -> None:
    args = [a.format(port=free_port()) for a in args]
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", *args,
        OVERNIGHT_REDIS_URL=redis_url, env={**dirs, **env},
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("overnight: error: ") and proc.stderr.count("\n") == 1
    assert words in proc.stderr


def test_a_burst_agent_says_which_task_it_cannot_run_before_exiting(
    redis_url: str, dirs: dict[str, str], agent_store: TaskStore, project: Repo
) -> None:
    big = enqueue(agent_store, project, gpus=2)
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none",
        "--name", "cpu-box", OVERNIGHT_REDIS_URL=redis_url, env=dirs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    why = "the task needs 2 GPUs; this agent offers 0"
    assert f"task {big.id} in q: agent cpu-box cannot run it: {why}" in proc.stderr
    assert (
        f"exiting (--burst) with work left: task {big.id} stays queued in q: this agent cannot "
        f"run it ({why})"
    ) in proc.stderr
    assert agent_store.get(big.id).status is TaskStatus.QUEUED


def test_a_closed_window_takes_no_task(
    redis_url: str, dirs: dict[str, str], agent_store: TaskStore, project: Repo
) -> None:
    record = enqueue(agent_store, project)
    proc = run_cli(
        "agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none",
        "--downtime", "mon-sun", OVERNIGHT_REDIS_URL=redis_url, env=dirs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert agent_store.get(record.id).status is TaskStatus.QUEUED


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--cpu-slots", "x"], ["--env-mode", "foo"], ["--gpus"], ["--max-env-gb", "a"]],
)
def test_bad_flags_are_one_line(args: list[str]) -> None:
    proc = run_cli("agent", "daemon", *args)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert proc.stderr.startswith("overnight: error: ") and proc.stderr.count("\n") == 1
    assert proc.stderr.endswith("see `overnight agent daemon --help`\n")


def test_help_documents_every_flag_and_names_every_other_setting() -> None:
    from overnight.commands.daemon import daemon_command

    text = run_cli("agent", "daemon", "--help", check=True).stdout
    flagged = {param.name for param in daemon_command.params}
    for param in daemon_command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{param.opts[0]} has no help"
            assert param.opts[-1] in text
    epilog = " ".join(text.split("These have no flag:")[1].split())
    for field in dataclasses.fields(AgentConfig):
        assert field.name in flagged or field.name in epilog, field.name


def test_eviction_limits_from_the_config_reach_the_venv_cache(tmp_path: Path) -> None:
    from overnight.agent.environments.venv.environment import VenvEnvironment
    from overnight.commands.daemon import make_environment

    config_file = tmp_path / "config.yaml"
    config_file.write_text("agent:\n  max_envs: 3\n")
    config = load_agent_config(
        {"env_mode": "venv", "cache_dir": str(tmp_path / "envs")},
        environ={"OVERNIGHT_MAX_ENV_GB": "1.5"},
        path=config_file,
    )
    environment = make_environment(config, {})
    assert isinstance(environment, VenvEnvironment)
    assert (environment.max_envs, environment.max_gb) == (3, 1.5)


def test_the_mirror_limit_from_the_config_reaches_the_workspaces(
    redis_url: str, tmp_path: Path
) -> None:
    from overnight.agent.environments.venv.environment import VenvEnvironment
    from overnight.agent.service.daemon import create_daemon

    config_file = tmp_path / "config.yaml"
    config_file.write_text("agent:\n  max_mirrors: 4\n")
    config = load_agent_config(
        {"env_mode": "venv", "redis_url": redis_url, "workspace_dir": str(tmp_path / "ws")},
        environ={},
        path=config_file,
    )
    daemon = create_daemon(config, VenvEnvironment(tmp_path / "envs"))
    assert daemon.pipeline.workspaces.max_mirrors == 4
    with pytest.raises(ConfigError, match="max_mirrors must be at least 1"):
        dataclasses.replace(config, max_mirrors=0)


def test_an_agent_on_the_nvml_path_packs_reports_and_survives_a_lost_gpu(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path,
    fake_driver: FakeDriver,
) -> None:  # fmt: skip
    """``--gpus all`` through the real pynvml bindings, over the fake driver of fake_nvml.c."""
    gpus = [FakeGPU(used_mb=512, util_pct=40), FakeGPU(used_mb=512, util_pct=60), FakeGPU()]
    foreign = [FakeProcess(2, 999999, 4096)]  # someone else's job holds GPU 2
    fake_driver.set(gpus, foreign)
    config = agent_config(
        redis_url, tmp_path / "agent", venv_cache, gpus="all", monitor_interval=0.1
    )
    agent = start_agent(config, tmp_path, **fake_driver.env())
    try:
        workers = wait_output(redis_url, "GPU 2 held back", "workers")
        assert "0,1,2" in workers and "4096 MB" in workers, workers
        pair = enqueue(agent_store, project, "--ticks", "8", gpus=2)
        done = wait_status(agent_store, pair.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        assert done.status is TaskStatus.FINISHED, done.error
        lost = {"nvmlDeviceGetUtilizationRates": pynvml.NVML_ERROR_GPU_IS_LOST}
        fake_driver.set(gpus, foreign, fail=lost)
        single = enqueue(agent_store, project, "--ticks", "5", gpus=1)
        after = wait_status(agent_store, single.id, TaskStatus.FINISHED, TaskStatus.FAILED)
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0, agent.output()
    finally:
        agent.kill()
    assert done.gpu_ids == ("0", "1")
    text = log_text(agent_store, pair.id).splitlines()
    assert "CUDA_VISIBLE_DEVICES=0,1" in text and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in text
    hardware = done.extra["hardware"]
    assert (hardware["gpu_model"], hardware["gpu_count"]) == ("NVIDIA H200", 2)
    assert (hardware["driver_version"], hardware["cuda_version"]) == ("550.54.15", "12.4")
    summary = done.extra["resources"]["summary"]
    assert (summary["gpu0.util_pct"]["peak"], summary["gpu1.util_pct"]["peak"]) == (40, 60)
    assert summary["gpu_mem_mb"]["peak"] == 1024
    # the lost GPU costs its readings, once, never the task
    assert after.status is TaskStatus.FINISHED, after.error
    assert after.gpu_ids == ("0",)
    assert not any(metric.startswith("gpu") for metric in after.extra["resources"]["summary"])
    warning = "GPU monitoring is off for this agent: NVML failed to read utilisation of GPU 0"
    assert agent.output().count(warning) == 1, agent.output()


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("redis+sentinel://app:pw@s1,s2/mymaster/0", True),
        ("redis+sentinel://s1,s2/mymaster/0?sentinel_password=pw", True),
        ("redis+sentinel://s1,s2/mymaster/0", False),
    ],
)
def test_a_sentinel_urls_passwords_count_as_passwords_on_the_command_line(
    url: str, warned: bool
) -> None:
    assert _has_password(url) is warned


def test_a_password_on_the_command_line_is_warned_about(
    password_url: str, redis_url: str, tmp_path: Path
) -> None:
    dirs = {f"OVERNIGHT_{n}_DIR": str(tmp_path / n) for n in ("WORKSPACE", "CACHE", "SPILL")}
    args = ("agent", "daemon", "-q", "q", "--burst", "--env-mode", "venv", "--gpus", "none")
    warned = run_cli(*args, "--redis-url", password_url, env=dirs)
    assert warned.returncode == 0, warned.stderr
    assert "the Redis password in --redis-url is visible to every user" in warned.stderr
    assert "set OVERNIGHT_REDIS_URL" in warned.stderr
    for quiet in (
        run_cli(*args, "--redis-url", redis_url, env=dirs),
        run_cli(*args, OVERNIGHT_REDIS_URL=password_url, env=dirs),
    ):
        assert quiet.returncode == 0, quiet.stderr
        assert "--redis-url is visible" not in quiet.stderr
