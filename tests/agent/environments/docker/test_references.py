"""Docker names checked at an agent's start: repositories, image references, volumes, sizes."""

from __future__ import annotations

import pytest

from overnight.agent.environments.docker.references import (
    check_image,
    check_repository,
    check_size,
    check_volume,
)
from overnight.errors import ConfigError


@pytest.mark.parametrize(
    "name", ["overnight-env", "envs/x", "a__b.c", "localhost:5000/team/envs", "Reg.Example/x"]
)
def test_repository_names_docker_takes(name: str) -> None:
    assert check_repository("docker_image_repo", name) == name


@pytest.mark.parametrize(
    "name", ["Team Envs", "Envs", "envs:latest", "localhost:5000", "a___b", "-a", "a/", ""]
)
def test_repository_names_docker_refuses_name_the_setting_and_an_example(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^docker_image_repo .* set docker_image_repo to e\.g\."):
        check_repository("docker_image_repo", name)


@pytest.mark.parametrize(
    "ref",
    [
        "python:3.11-slim",
        "nvcr.io/nvidia/pytorch:24.05-py3",
        "overnight-base:bookworm",
        "ubuntu@sha256:" + "0" * 64,
        "localhost:5000/x:1",
    ],
)
def test_image_references_docker_takes(ref: str) -> None:
    assert check_image("default_image", ref) == ref


@pytest.mark.parametrize("ref", ["Python:3.11", "python:", "python:3.11 slim", "a@sha256:12"])
def test_image_references_docker_refuses(ref: str) -> None:
    with pytest.raises(ConfigError, match=r"^default_image .* is not an image reference"):
        check_image("default_image", ref)


def test_volume_names_and_sizes() -> None:
    assert check_volume("docker_cache_volume", "pip-cache.1") == "pip-cache.1"
    for bad in ("pip/cache", "x", "-x"):
        with pytest.raises(ConfigError, match="is not a volume name"):
            check_volume("docker_cache_volume", bad)
    assert check_size("docker_shm_size", "2g") == "2g"
    with pytest.raises(ConfigError, match=r"^docker_shm_size 'lots' is not a size; set"):
        check_size("docker_shm_size", "lots")
