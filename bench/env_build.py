"""Environment builds side by side: docker with the image's pip, docker with uv, a venv with uv.

The same requirements, each build from an empty package cache (the first build of a key on an
agent, which is what a sweep's first task waits for): a Docker image built with the base image's
pip (what docker mode did before it used uv), with the agent's uv copied into the install
container (what it does now), and a venv with the agent's uv (venv mode). Then the docker/uv
build again with the cache its first build left in a shared ``cache_volume``.

    python bench/env_build.py [--image overnight-base:bookworm] [--requirements "a==1 b==2"]

The default requirements are a small ML project's, with a source-only package (gym). Everything
it creates (images, volumes, venvs) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker

from overnight.agent.environments.base import Environment
from overnight.agent.environments.docker.environment import DockerEnvironment
from overnight.agent.environments.installs import require_uv
from overnight.agent.environments.venv.environment import VenvEnvironment
from overnight.spec import RepoState, Requirements, TaskSpec

REQUIREMENTS = (
    "numpy==2.2.6 pandas==2.2.3 scikit-learn==1.6.1 requests==2.32.3 tqdm==4.67.1 "
    "pyyaml==6.0.2 gym==0.26.2"
)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def spec(requirements: str, python: str) -> TaskSpec:
    return TaskSpec(
        repo=RepoState(commit="0" * 40),
        argv=("python3", "-c", "print('hello')"),
        python=python,
        requirements=Requirements(source="file", text=requirements),
    )


def build(name: str, env: Environment, task: TaskSpec, image: str | None) -> float:
    start = time.perf_counter()
    prepared = env.prepare(task, lambda line: None, lambda: False, image=image)
    seconds = time.perf_counter() - start
    assert prepared.built, f"{name}: reused, not built"
    installer = prepared.details.get("installer", "uv")
    print(f"{name:<34} {seconds:7.2f} s  ({installer})", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="overnight-base:bookworm")
    parser.add_argument("--requirements", default=REQUIREMENTS)
    args = parser.parse_args()
    requirements = "\n".join(args.requirements.split()) + "\n"
    client = docker.from_env(timeout=600)
    tag = uuid.uuid4().hex[:8]
    repo, volume = f"overnight-env-bench-{tag}", f"overnight-bench-cache-{tag}"
    uv = Path(require_uv())
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:

        def docker_env(uv_bin: Path | None, cache_volume: str | None = None) -> DockerEnvironment:
            return DockerEnvironment(
                client,
                agent_name=f"bench-{tag}",
                default_image=args.image,
                ca_bundle=CA_BUNDLE if CA_BUNDLE.is_file() else None,
                state_dir=Path(tmp) / "state",
                image_repo=repo,
                cache_volume=cache_volume,
                uv_bin=uv_bin,
            )

        def fresh(make: Callable[[], DockerEnvironment]) -> DockerEnvironment:
            for image in client.images.list(name=repo):  # the key is the same: build it again
                client.images.remove(image.id, force=True)
            return make()

        try:
            python = docker_env(uv).images.base(args.image).python
            task = spec(requirements, python)
            print(f"{len(requirements.split())} requirements on {args.image} (Python {python})")
            pip = build("docker, the image's pip", fresh(lambda: docker_env(None)), task, None)
            with_uv = build("docker, the agent's uv", fresh(lambda: docker_env(uv)), task, None)
            venv = build("venv, uv", VenvEnvironment(Path(tmp) / "venvs"), task, None)
            build("docker, uv, filling a cache", fresh(lambda: docker_env(uv, volume)), task, None)
            warm = build(
                "docker, uv, from that cache", fresh(lambda: docker_env(uv, volume)), task, None
            )
            print(f"{'docker pip / docker uv':<34} {pip / with_uv:7.2f}")
            print(f"{'docker uv / venv uv':<34} {with_uv / venv:7.2f}")
            print(f"{'docker uv: warm cache / empty':<34} {warm / with_uv:7.2f}")
        finally:
            for image in client.images.list(name=repo):
                client.images.remove(image.id, force=True)
            with contextlib.suppress(docker.errors.APIError):
                client.volumes.get(volume).remove(force=True)
            client.close()


if __name__ == "__main__":
    sys.exit(main())
