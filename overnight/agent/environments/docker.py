"""Docker mode: each task runs in a container from its environment image.

The environment image (base image + requirements, see
:mod:`overnight.agent.environments.docker_images`) is built once per key. A task's container
mounts the reconstructed workspace at :data:`WORKSPACE`, runs as the agent's uid:gid with an
init process, the assigned GPUs only, and labels that let a restarted agent find and adopt it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types

from overnight.agent.environments.base import (
    Environment,
    LogSink,
    Prepared,
    RunRequest,
    StopCheck,
)
from overnight.agent.environments.docker_build import WORKSPACE
from overnight.agent.environments.docker_images import EnvImages
from overnight.agent.environments.docker_process import DockerProcess
from overnight.errors import ConfigError, TaskRunError
from overnight.spec import TaskSpec

CA_PATH = "/etc/overnight/ca-bundle.crt"  # where the agent's CA bundle is mounted
CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
LOG_CONFIG = {"max-size": "100m", "max-file": "5"}  # json-file: the logs API and adoption need it


@dataclasses.dataclass(frozen=True)
class AdoptedTask:
    """A container this agent started before it restarted, found again by its labels."""

    task_id: str
    container: Any  # docker.models.containers.Container
    state: str  # docker's status: "running", "exited", "created", ...
    exit_code: int | None  # None while it runs

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "restarting")

    @property
    def process(self) -> DockerProcess:
        return DockerProcess(self.container)

    def process_since(self, since: float | None) -> DockerProcess:
        """A process whose output starts after ``since`` (a :attr:`DockerProcess.last_log_time`)."""
        return DockerProcess(self.container, since=since)


class DockerEnvironment(Environment):
    """Runs tasks in containers from cached environment images."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        agent_name: str,
        default_image: str | None = None,
        cache_volume: str = "overnight-pkg-cache",
        ca_bundle: Path | None = None,
        shm_size: str = "2g",
        network: str | None = None,
        mounts: tuple[str, ...] = (),
        max_images: int = 20,
        uid_gid: str | None = None,
        max_gb: float | None = None,
        state_dir: Path | None = None,
        image_repo: str = "overnight-env",
        installer_env: Mapping[str, str] | None = None,
        build_network: str | None = None,
    ) -> None:
        if ca_bundle is not None and not ca_bundle.is_file():
            raise ConfigError(f"CA bundle {ca_bundle} is not a file; point ca_bundle at a PEM file")
        self.client = client
        self.agent_name = agent_name
        self.default_image = default_image
        self.ca_bundle = ca_bundle
        self.shm_size = shm_size
        self.network = network
        self.mounts = tuple(parse_mount(m) for m in mounts)
        self.uid_gid = uid_gid or f"{os.getuid()}:{os.getgid()}"
        state = state_dir or Path(tempfile.gettempdir()) / f"overnight-docker-{os.getuid()}"
        self.images = EnvImages(
            client,
            agent_name=agent_name,
            state_dir=state,
            repo=image_repo,
            cache_volume=cache_volume,
            ca_bundle=ca_bundle,
            installer_env=installer_env,
            network=build_network,
            max_images=max_images,
            max_gb=max_gb,
        )

    def base_image(self, spec: TaskSpec, *, image: str | None = None) -> str:
        """The task's image, else the agent's default, else ``python:X.Y-slim`` for the spec."""
        if image:
            return image
        if self.default_image:
            return self.default_image
        return f"python:{'.'.join(spec.python.split('.')[:2])}-slim"

    def key(self, spec: TaskSpec, *, image: str | None = None) -> str:
        base = self.images.base(self.base_image(spec, image=image))
        return self.images.key(base, spec.requirements.text)

    def prepare(
        self, spec: TaskSpec, log: LogSink, should_stop: StopCheck, *, image: str | None = None
    ) -> Prepared:
        base = self.images.base(self.base_image(spec, image=image))
        env = self.images.ensure(base, spec.requirements.text, log, should_stop)
        warnings: tuple[str, ...] = ()
        if base.python.split(".")[:2] != spec.python.split(".")[:2]:
            warnings = (f"recorded Python {spec.python}; image {base.name} has {base.python}",)
        return Prepared(
            key=env.key,
            built=env.built,
            python=base.python,
            details={
                "image": env.tag,
                "image_id": env.id,
                "base_image": base.name,
                "base_image_id": base.id,
                "installer": base.installer,
            },
            warnings=warnings,
        )

    def run_options(self, prepared: Prepared, request: RunRequest) -> dict[str, Any]:
        """The keyword arguments of ``client.containers.create`` for this task."""
        workdir = posixpath.normpath(request.workdir or ".")
        if workdir.startswith(("/", "..")):
            raise TaskRunError(
                f"working directory {request.workdir!r} is outside the repository; "
                "record the task from inside the repository"
            )
        env = {"HOME": "/tmp", "USER": "overnight", "LOGNAME": "overnight"}
        mounts = [docker.types.Mount(WORKSPACE, str(request.workspace), type="bind")]
        if self.ca_bundle is not None:
            mounts.append(docker.types.Mount(CA_PATH, str(self.ca_bundle), "bind", read_only=True))
            env.update(dict.fromkeys(CA_VARIABLES, CA_PATH), UV_NATIVE_TLS="1")
        mounts.extend(self.mounts)
        env.update(request.env)
        options: dict[str, Any] = {
            "image": prepared.details["image_id"],
            "command": list(request.argv),
            "entrypoint": "",
            "working_dir": posixpath.join(WORKSPACE, workdir) if workdir != "." else WORKSPACE,
            "user": self.uid_gid,
            "init": True,
            "shm_size": self.shm_size,
            "environment": env,
            "mounts": mounts,
            "labels": {
                **request.labels,
                "overnight.role": "task",
                "overnight.task": request.task_id,
                "overnight.agent": self.agent_name,
            },
            "log_config": docker.types.LogConfig(type="json-file", config=LOG_CONFIG),
            "stdin_open": False,
            "detach": True,
        }
        if self.network:
            options["network_mode"] = self.network
        if request.gpu_ids:
            options["device_requests"] = [
                docker.types.DeviceRequest(device_ids=list(request.gpu_ids), capabilities=[["gpu"]])
            ]
            # inside the container the assigned GPUs are numbered from 0
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(request.gpu_ids)))
        return options

    def start(self, prepared: Prepared, request: RunRequest) -> DockerProcess:
        options = self.run_options(prepared, request)
        try:
            container = self.client.containers.create(**options)
        except docker.errors.ImageNotFound as exc:
            raise TaskRunError(
                f"environment image {prepared.details['image']} was removed before the task "
                "started; run the task again"
            ) from exc
        except docker.errors.APIError as exc:
            raise TaskRunError(f"cannot create the task's container: {exc.explanation}") from exc
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
            raise TaskRunError(f"cannot start the task's container: {exc.explanation}") from exc
        return DockerProcess(container)

    def adopt(self) -> list[AdoptedTask]:
        """This agent's task containers, running or exited, found by their labels.

        Also removes install containers this agent left behind when it died mid-build.
        """
        for stale in self.client.containers.list(
            all=True,
            filters={"label": ["overnight.role=build", f"overnight.builder={self.agent_name}"]},
        ):
            with contextlib.suppress(docker.errors.APIError):
                stale.remove(force=True, v=True)
        found = []
        for container in self.client.containers.list(
            all=True,
            filters={"label": ["overnight.role=task", f"overnight.agent={self.agent_name}"]},
        ):
            state = container.attrs.get("State", {})
            status = str(state.get("Status", container.status))
            done = status in ("exited", "dead")
            found.append(
                AdoptedTask(
                    task_id=str(container.labels.get("overnight.task", "")),
                    container=container,
                    state=status,
                    exit_code=int(state.get("ExitCode", -1)) if done else None,
                )
            )
        return found


def parse_mount(text: str) -> docker.types.Mount:
    """An extra mount, ``HOST:CONTAINER`` or ``HOST:CONTAINER:ro`` (datasets, model caches)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]) or parts[2:] not in ([], ["ro"], ["rw"]):
        raise ConfigError(f"mount {text!r} is not HOST:CONTAINER[:ro]; e.g. /data:/data:ro")
    host, target = parts[0], parts[1]
    if not (host.startswith("/") and target.startswith("/")):
        raise ConfigError(f"mount {text!r} needs absolute paths on both sides")
    return docker.types.Mount(target, host, type="bind", read_only=parts[2:] == ["ro"])
