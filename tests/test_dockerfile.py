"""The repository's Dockerfile builds the agent image from a local base image, no registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.cli import REPO_ROOT
from tests.fixtures.docker import BASE_IMAGE, CA_BUNDLE, DockerSandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def build_context() -> dict[str, bytes]:
    """What ``docker build .`` in a checkout sends that the Dockerfile uses (and the CA bundle)."""
    files = {
        name: (REPO_ROOT / name).read_bytes()
        for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
    }
    for path in sorted((REPO_ROOT / "overnight").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(REPO_ROOT).as_posix()] = path.read_bytes()
    if CA_BUNDLE.is_file():
        files["ca-bundle.crt"] = CA_BUNDLE.read_bytes()  # for the inspecting proxy to PyPI
    return files


def test_the_dockerfile_builds_an_agent_that_reaches_the_engine(
    docker_sandbox: DockerSandbox,
) -> None:
    image, output = docker_sandbox.build(build_context(), BASE_IMAGE=BASE_IMAGE)
    client = docker_sandbox.client
    assert "Successfully installed" in output

    version = client.containers.run(image, ["--version"], remove=True)
    assert version.decode().startswith("overnight, version ")

    check = (
        "import docker, shutil, sys; from overnight.agent.environments.docker.environment import "
        "DockerEnvironment; print(docker.from_env().ping(), bool(shutil.which('git')), "
        "sys.prefix)"
    )
    out = client.containers.run(
        image,
        ["-c", check],
        entrypoint="python3",
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        remove=True,
    )
    assert out.decode().split() == ["True", "True", "/opt/overnight"]
    attrs = client.images.get(image).attrs
    assert attrs["Config"]["Entrypoint"] == ["overnight"]
    assert not any(Path(p).name == "ca-bundle.crt" for p in _listing(docker_sandbox, image))


def _listing(sandbox: DockerSandbox, image: str) -> list[str]:
    raw: bytes = sandbox.client.containers.run(
        image,
        ["/", "-name", "ca-bundle.crt", "-not", "-path", "/proc/*"],
        entrypoint="find",
        remove=True,
    )
    return raw.decode().split()
