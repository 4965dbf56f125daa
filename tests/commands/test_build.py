"""``overnight agent build``: a standalone image that plain ``docker run`` runs as recorded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from overnight.cli import cli
from overnight.errors import ExitCode
from tests.fixtures.docker import BASE_IMAGE, DockerSandbox
from tests.fixtures.gitrepo import Repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _local_repos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repos here have a local bare origin, which builds fetch only when allowed."""
    monkeypatch.setenv("OVERNIGHT_ALLOW_LOCAL_REPOS", "1")


BINARY = bytes(range(256)) * 8
TRAIN = """import hashlib, os, sys
print('args', sys.argv[1:])
print('cwd', os.getcwd())
print('data', open('../data.txt').read())
print('blob', hashlib.sha256(open('../weights.bin', 'rb').read()).hexdigest())
print('seed', os.environ.get('SEED'))
"""


def prepare_repo(repo: Repo) -> None:
    """An uncommitted edit, an untracked text file and a binary file, the command in a subdir."""
    repo.write("requirements.txt", "")
    repo.write("src/train.py", "print('committed version')\n")
    repo.commit("train in src")
    repo.push()
    repo.write("src/train.py", TRAIN)  # uncommitted change
    repo.write("data.txt", "untracked data")
    repo.write("weights.bin", BINARY)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def expected(seed: str) -> list[str]:
    return [
        "args ['--lr', '0.5']",
        "cwd /workspace/src",
        "data untracked data",
        f"blob {hashlib.sha256(BINARY).hexdigest()}",
        f"seed {seed}",
    ]


def test_a_spec_file_becomes_an_image_that_docker_run_reproduces(
    repo: Repo, docker_sandbox: DockerSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_repo(repo)
    monkeypatch.chdir(repo.path / "src")
    monkeypatch.setenv("SEED", "7")
    spec = tmp_path / "task.json"
    code, out = invoke(
        "snapshot", "-o", str(spec), "--requirements", "../requirements.txt", "--env", "SEED",
        "--", "python", "train.py", "--lr", "0.5",
    )  # fmt: skip
    assert code == 0, out
    monkeypatch.setenv("OVERNIGHT_DOCKER_IMAGE_REPO", docker_sandbox.repo)
    monkeypatch.setenv("OVERNIGHT_DOCKER_CACHE_VOLUME", docker_sandbox.volume)
    monkeypatch.setenv("OVERNIGHT_DEFAULT_IMAGE", f"overnight-absent-{docker_sandbox.tag}:1")
    tag = f"overnight-standalone-test-{docker_sandbox.tag}:v1"
    docker_sandbox.images.append(tag)
    code, out = invoke("agent", "build", str(spec), "--tag", tag, "--image", BASE_IMAGE)
    assert code == 0, out
    assert f"docker run {tag}" in out
    assert "building environment" in out

    output = docker_sandbox.client.containers.run(tag, remove=True)
    assert output.decode().splitlines() == expected("7")
    labels = docker_sandbox.client.images.get(tag).labels
    assert labels["overnight.role"] == "standalone"
    assert labels["overnight.commit"] == repo.git("rev-parse", "HEAD").strip()

    monkeypatch.setenv("OVERNIGHT_DEFAULT_IMAGE", BASE_IMAGE)  # the agent's default image
    again = f"overnight-standalone-test-{docker_sandbox.tag}:v2"
    docker_sandbox.images.append(again)
    code, out = invoke("agent", "build", str(spec), "--tag", again)
    assert code == 0, out
    assert "building environment" not in out  # the environment image the first build made
    assert docker_sandbox.client.containers.run(again, remove=True) == output


def test_a_queued_task_is_built_by_id_on_its_own_image(
    repo: Repo,
    docker_sandbox: DockerSandbox,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepare_repo(repo)
    monkeypatch.chdir(repo.path / "src")
    monkeypatch.setenv("OVERNIGHT_REDIS_URL", redis_url)
    monkeypatch.setenv("SEED", "8")
    code, out = invoke(
        "enqueue", "-q", "gpu", "--image", BASE_IMAGE, "--requirements", "../requirements.txt",
        "--env", "SEED", "--", "python", "train.py", "--lr", "0.5",
    )  # fmt: skip
    assert code == 0, out
    task_id = out.split()[0]
    tag = f"overnight-standalone-test-{docker_sandbox.tag}:by-id"
    docker_sandbox.images.append(tag)
    code, out = invoke(
        "agent", "build", task_id[:8], "-t", tag, "--env-repo", docker_sandbox.repo,
        "--cache-volume", docker_sandbox.volume,
    )  # fmt: skip
    assert code == 0, out
    assert docker_sandbox.client.images.get(tag).labels["overnight.task"] == task_id
    output = docker_sandbox.client.containers.run(tag, remove=True)
    assert output.decode().splitlines() == expected("8")


def test_a_missing_spec_file_is_a_usage_error(tmp_path: Path) -> None:
    code, out = invoke("agent", "build", str(tmp_path / "nope.json"), "--tag", "x:1")
    assert code == ExitCode.USAGE
    assert "no such file" in out
