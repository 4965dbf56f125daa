"""A task sees an allowlist of the agent's environment and none of its secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.agent.run.taskenv import TaskEnv
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import agent_config, enqueue, log_text, start_agent, wait_status
from tests.fixtures.gitrepo import Repo
from tests.fixtures.redis_urls import AGENT_PASSWORD

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-canary-secret",
    "GITHUB_TOKEN": "ghp_canarytoken000",
    "SOME_AGENT_VARIABLE": "agent-canary",  # not secret-looking: passes only by name
}
GIT_TOKEN = "git-canary-token"
PRINT_ENV = "import os\nfor k, v in sorted(os.environ.items()):\n    print(f'{k}={v}')\n"


@pytest.mark.slow
def test_a_task_sees_the_allowlist_and_none_of_the_agents_secrets(
    password_url: str, tmp_path: Path, venv_cache: Path, project: Repo, agent_store: TaskStore
) -> None:
    snapshot = take_snapshot(
        project.path, ["python", "-c", PRINT_ENV], SnapshotOptions(env=("TASK_OWN=recorded",))
    )
    record = enqueue(agent_store, project, snapshot=snapshot)
    config = agent_config(
        password_url,
        tmp_path,
        venv_cache,
        git_tokens={"git.lab.invalid": GIT_TOKEN},
        env={"FROM_AGENT_CONFIG": "set"},
        pass_env=("HF_*",),
        keep_workspaces=True,
    )
    agent = start_agent(
        config,
        tmp_path,
        "--burst",
        **SECRETS,
        HF_HOME="/data/hf",
        https_proxy="http://proxy.lab:3128",
        LC_ALL="C.UTF-8",
        NVIDIA_DRIVER_CAPABILITIES="compute",
    )
    assert agent.wait() == 0, agent.output()
    wait_status(agent_store, record.id, TaskStatus.FINISHED)
    lines = set(log_text(agent_store, record.id).splitlines())
    seen = "\n".join(lines)
    for secret in (AGENT_PASSWORD, GIT_TOKEN, *SECRETS.values()):
        assert secret not in seen
    assert not any(
        line.startswith(("OVERNIGHT_REDIS_URL", "OVERNIGHT_GIT", "OVERNIGHT_CONFIG"))
        for line in lines
    )
    assert {
        "TASK_OWN=recorded",
        "FROM_AGENT_CONFIG=set",
        "HF_HOME=/data/hf",
        "https_proxy=http://proxy.lab:3128",
        "LC_ALL=C.UTF-8",
        "NVIDIA_DRIVER_CAPABILITIES=compute",
        f"OVERNIGHT_TASK_ID={record.id}",
        "OVERNIGHT_QUEUE=q",
    } <= lines
    assert any(line.startswith("PATH=") for line in lines)
    for path in config.workspace_path.rglob("*"):  # the task's tree, its .git/config included
        if path.is_file() and not path.is_symlink():
            assert GIT_TOKEN.encode() not in path.read_bytes(), path


def test_pass_env_adds_names_but_never_the_agents_own_settings() -> None:
    host = {"OVERNIGHT_REDIS_URL": "redis://:pw@h/0", "WANDB_MODE": "offline", "PATH": "/bin"}
    env = TaskEnv(host, pass_env=("*",))
    assert env.task() == {"WANDB_MODE": "offline", "PATH": "/bin"}
    assert TaskEnv(host).task(host_paths=False) == {}


def test_families_and_globs_pass_no_secret_looking_name_but_exact_names_do() -> None:
    host = {"NVIDIA_API_KEY": "nvapi-x", "NVIDIA_VISIBLE_DEVICES": "all", "WANDB_API_KEY": "w"}
    assert TaskEnv(host, pass_env=("WANDB_*",)).task() == {"NVIDIA_VISIBLE_DEVICES": "all"}
    assert TaskEnv(host, pass_env=("WANDB_API_KEY",)).task()["WANDB_API_KEY"] == "w"
    assert "NVIDIA_VISIBLE_DEVICES" not in TaskEnv(host).task(host_paths=False)
