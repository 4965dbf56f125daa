"""Docker mode overhead: a warm task's start-to-exit against a bare ``docker run``.

Warm: the environment image exists; each run starts the task's container through
``DockerEnvironment.start`` (workspace mount, init, labels, uid, log streaming) and reads its
output to the exit code, then removes it; the bare run is ``docker run --rm IMAGE CMD`` of the
same image and command. Target: under 0.3 s extra at the median.

Builds (cold, pip against uv, docker against venv) are ``bench/env_build.py``'s.

    python bench/docker_overhead.py [--runs 20] [--image overnight-base:bookworm]

Everything it creates (images, containers) is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default="overnight-base:bookworm")
    parser.add_argument(
        "--ca-bundle", type=Path, default=Path("/etc/ssl/certs/ca-certificates.crt")
    )
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    tag = uuid.uuid4().hex[:8]
    repo = f"overnight-env-bench-{tag}"
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:

        def make() -> DockerEnvironment:
            return DockerEnvironment(
                client,
                agent_name=f"bench-{tag}",
                default_image=args.image,
                ca_bundle=args.ca_bundle if args.ca_bundle.is_file() else None,
                state_dir=Path(tmp) / "state",
                image_repo=repo,
            )

        try:
            print(f"image {args.image}, {args.runs} runs each")
            warm(client, make(), args.runs, Path(tmp))
        finally:
            for image in client.images.list(name=repo):
                client.images.remove(image.id, force=True)
            client.close()


if __name__ == "__main__":
    main()
