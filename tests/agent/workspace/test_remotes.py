"""Reaching remotes with the agent's own credentials: no prompts, errors naming the host, a
fetch that a cancel kills. Exercised through :class:`Workspaces`, as the agent uses them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from overnight.agent.workspace.remotes import GitCredentials
from overnight.agent.workspace.workspaces import Workspaces
from overnight.errors import PreparationCanceled, ReconstructError
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot
from tests.fixtures.agents import ended, wait_for
from tests.fixtures.gitrepo import Repo, worktree_state
from tests.fixtures.gitserver import hanging_ssh
from tests.fixtures.gitserver import private_remote as serve_private

TOKEN = "s3cret-token"


def _snap(repo: Repo) -> Snapshot:
    return Snapshot.from_json(
        take_snapshot(repo.path, ["python", "train.py"], SnapshotOptions()).to_json()
    )


def _log(line: str) -> None:
    pass


def test_unreachable_remote_names_it(repo: Repo, tmp_path: Path) -> None:
    snap = _snap(repo)
    assert repo.origin is not None
    shutil.rmtree(repo.origin)
    with pytest.raises(ReconstructError, match=rf"^cannot reach {repo.origin}: "):
        Workspaces(tmp_path / "ws").create("t", snap, _log)
    assert not (tmp_path / "ws" / "tasks" / "t").exists()


def test_ssh_never_prompts_and_names_the_host(repo: Repo, tmp_path: Path) -> None:
    env = GitCredentials(ssh_command="ssh -i /keys/deploy").env()
    assert env["GIT_SSH_COMMAND"].startswith("ssh -i /keys/deploy -o BatchMode=yes")
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    repo.git("remote", "set-url", "origin", "ssh://git@127.0.0.1:9/lab/private.git")
    snap = _snap(repo)
    with pytest.raises(ReconstructError) as info:
        Workspaces(tmp_path / "ws").create("t", snap, _log)
    assert str(info.value).startswith("cannot reach ssh://git@127.0.0.1:9/lab/private.git: ssh: ")


@pytest.fixture
def private_remote(repo: Repo) -> Iterator[str]:
    assert repo.origin is not None
    with serve_private(repo.origin, TOKEN) as url:
        repo.git("remote", "set-url", "origin", url)
        yield url


@pytest.mark.slow
def test_missing_credential_fails_at_once_naming_the_host(
    repo: Repo, tmp_path: Path, private_remote: str
) -> None:
    with pytest.raises(ReconstructError) as info:
        Workspaces(tmp_path / "ws").create("t", _snap(repo), _log)
    message = str(info.value)
    assert message.startswith(f"cannot reach {private_remote}: ")
    assert "no working credentials for 127.0.0.1" in message


@pytest.mark.slow
def test_agent_token_opens_a_private_remote_and_is_never_stored(
    repo: Repo, tmp_path: Path, private_remote: str
) -> None:
    repo.write("train.py", "print('private')\n")
    prefix = private_remote.rsplit("/", 1)[0] + "/"
    spaces = Workspaces(tmp_path / "ws", credentials=GitCredentials(tokens={prefix: TOKEN}))
    snap = _snap(repo)
    assert TOKEN not in snap.to_json()
    dest = spaces.create("t", snap, _log)
    assert worktree_state(dest) == worktree_state(repo.path)
    for root, _, files in os.walk(tmp_path / "ws"):
        for name in files:
            path = Path(root) / name
            if name == "config" or path.suffix in (".txt", ""):
                assert TOKEN.encode() not in path.read_bytes(), path


def test_a_cancel_kills_a_hanging_fetch_and_its_ssh(repo: Repo, tmp_path: Path) -> None:
    command, pid_file = hanging_ssh(tmp_path)
    repo.git("remote", "set-url", "origin", "ssh://git@lab.invalid/private.git")
    spaces = Workspaces(tmp_path / "ws", credentials=GitCredentials(ssh_command=command))
    with pytest.raises(
        PreparationCanceled, match=r"^canceled while fetching ssh://git@lab\.invalid"
    ):
        spaces.create("t", _snap(repo), _log, should_stop=pid_file.exists)
    wait_for(lambda: ended(int(pid_file.read_text())), what="the ssh process to be killed")
    assert not spaces.task_dir("t").exists()
    assert [p.name for p in spaces.mirrors.iterdir() if p.is_dir()] == []  # no half mirror
