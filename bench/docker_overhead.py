"""Docker mode overhead: a warm task's start-to-exit against a bare ``docker run``.

Warm: the environment image exists; each run starts the task's container through
``DockerEnvironment.start`` (workspace mount, init, labels, uid, log streaming) and reads its
output to the exit code, then removes it; the bare run is ``docker run --rm IMAGE CMD`` of the
same image and command. Target: under 0.3 s extra at the median.

Cold: building an environment image with an empty package-cache volume, then again (image
removed) with the cache the first build left; with pip (the base image's), then with uv (this
machine's uv binary copied into the base image).

    python bench/docker_overhead.py [--runs 20] [--image overnight-base:bookworm]
        [--requirements "requests==2.32.3 rich==13.7.1"] [--ca-bundle PATH]

Everything it creates (images, containers, volumes) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import uv

from overnight.agent.environments.base import RunRequest
from overnight.agent.environments.docker.environment import DockerEnvironment
from overnight.spec import RepoState, Requirements, TaskSpec

COMMAND = ("python3", "-c", "print('hello')")


def spec(requirements: str) -> TaskSpec:
    return TaskSpec(
        repo=RepoState(commit="0" * 40),
        argv=COMMAND,
        python="3.11.0",
        requirements=Requirements(source="file", text=requirements),
    )


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def summary(name: str, seconds: list[float]) -> float:
    median = statistics.median(seconds)
    print(f"{name:<38} median {median:6.3f} s  min {min(seconds):6.3f}  max {max(seconds):6.3f}")
    return median


def warm(client: docker.DockerClient, env: DockerEnvironment, runs: int, workdir: Path) -> None:
    prepared = env.prepare(spec(""), lambda line: None, lambda: False)
    image = prepared.details["image"]

    def overnight_run() -> None:
        req = RunRequest(task_id="bench", argv=COMMAND, workspace=workdir, workdir=".", env={})
        proc = env.start(prepared, req)
        assert b"".join(proc.output()) == b"hello\n"
        assert proc.wait() == 0
        proc.remove()

    def bare_run() -> None:
        out = subprocess.run(["docker", "run", "--rm", image, *COMMAND], capture_output=True)
        assert out.stdout == b"hello\n", out.stderr

    overnight_run()  # first runs warm the engine's caches
    bare_run()
    ours, bare = [], []
    for _ in range(runs):
        ours.append(timed(overnight_run))
        bare.append(timed(bare_run))
    a = summary("DockerEnvironment.start -> exit, rm", ours)
    b = summary("docker run --rm (CLI)", bare)
    print(f"{'extra at the median':<38} {a - b:+.3f} s (target < 0.3 s)")


def cold(
    client: docker.DockerClient,
    make: Callable[..., DockerEnvironment],
    requirements: str,
    image: str | None = None,
) -> None:
    volume = f"overnight-bench-cache-{uuid.uuid4().hex[:8]}"
    try:
        times: list[float] = []
        for label in ("empty package cache", "warm package cache"):
            env = make(cache_volume=volume)
            start = time.perf_counter()
            prepared = env.prepare(
                spec(requirements), lambda line: None, lambda: False, image=image
            )
            times.append(time.perf_counter() - start)
            assert prepared.built
            client.images.remove(prepared.details["image_id"], force=True)
            installer = prepared.details["installer"].split()[0]
            print(f"cold build ({installer}), {label:<20} {times[-1]:6.2f} s")
        print(f"{'warm cache / empty cache':<38} {times[1] / times[0]:.2f}")
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.volumes.get(volume).remove(force=True)


def with_uv(client: docker.DockerClient, image: str) -> str:
    """``image`` plus this machine's uv binary, so the build takes the uv path; its id."""
    data = Path(uv.find_uv_bin()).read_bytes()
    container = client.containers.create(image, ["true"])
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("usr/local/bin/uv")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        container.put_archive("/", buffer.getvalue())
        return str(container.commit(repository=f"overnight-bench-uv-{uuid.uuid4().hex[:8]}").id)
    finally:
        container.remove(force=True, v=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default="overnight-base:bookworm")
    parser.add_argument("--requirements", default="requests==2.32.3 rich==13.7.1")
    parser.add_argument(
        "--ca-bundle", type=Path, default=Path("/etc/ssl/certs/ca-certificates.crt")
    )
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    tag = uuid.uuid4().hex[:8]
    repo = f"overnight-env-bench-{tag}"
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:

        def make(cache_volume: str = f"overnight-bench-cache-{tag}") -> DockerEnvironment:
            return DockerEnvironment(
                client,
                agent_name=f"bench-{tag}",
                default_image=args.image,
                ca_bundle=args.ca_bundle if args.ca_bundle.is_file() else None,
                state_dir=Path(tmp) / "state",
                image_repo=repo,
                cache_volume=cache_volume,
            )

        try:
            print(f"image {args.image}, {args.runs} runs each")
            warm(client, make(), args.runs, Path(tmp))
            requirements = "\n".join(args.requirements.split()) + "\n"
            cold(client, make, requirements)
            uv_image = with_uv(client, args.image)
            try:
                cold(client, make, requirements, image=uv_image)
            finally:
                client.images.remove(uv_image, force=True)
        finally:
            for image in client.images.list(name=repo):
                client.images.remove(image.id, force=True)
            with contextlib.suppress(docker.errors.APIError):
                client.volumes.get(f"overnight-bench-cache-{tag}").remove(force=True)
            client.close()


if __name__ == "__main__":
    main()
