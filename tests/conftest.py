from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.agents import agent_store, project, venv_cache
from tests.fixtures.docker import docker_sandbox
from tests.fixtures.fakenvml import fake_driver, fake_nvml_lib
from tests.fixtures.gitrepo import Repo, make_repo
from tests.fixtures.listeners import mailbox, webhook
from tests.fixtures.redis_urls import password_url
from tests.fixtures.services import docker_engine, redis_server, redis_url

__all__ = [
    "agent_store",
    "docker_engine",
    "docker_sandbox",
    "fake_driver",
    "fake_nvml_lib",
    "mailbox",
    "password_url",
    "project",
    "redis_server",
    "redis_url",
    "venv_cache",
    "webhook",
]


@pytest.fixture(autouse=True)
def _isolated_git_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test gets an empty global git config, so the developer's settings never leak in."""
    home = tmp_path_factory.mktemp("home")
    cfg = home / ".gitconfig"
    cfg.write_text(
        "[user]\n\tname = Test\n\temail = test@example.invalid\n[init]\n\tdefaultBranch = main\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("OVERNIGHT_CONFIG", str(home / "overnight.yaml"))
    return cfg


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A git repo with one pushed commit and a local bare origin."""
    return make_repo(tmp_path)
