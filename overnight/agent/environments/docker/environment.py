"""Docker mode: each task runs in a container from its environment image.

The environment image (base image + requirements, see
:mod:`overnight.agent.environments.docker.images`) is built once per key. A task's container
mounts the reconstructed workspace at :data:`WORKSPACE` and runs as the agent's uid:gid, or,
under a root agent, as ``docker_user`` (default :data:`NOBODY`) that the tree is handed to
first: never as root unless named, so no file a task leaves (a setuid copy of a shell) gives a
host user more than the task had. It has no capabilities and cannot gain any, an init process,
the assigned GPUs only, and labels that let a restarted agent find and adopt it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import docker
import docker.errors
import docker.types

from overnight.agent.config import AgentConfig
from overnight.agent.environments.base import AdoptedTask, Environment, Prepared, RunRequest
from overnight.agent.environments.docker.build import NOBODY, WORKSPACE, Installer, confined
from overnight.agent.environments.docker.guard import (
    adoption_window,
    end_guards,
    start_container_guard,
)
from overnight.agent.environments.docker.images import EnvImages
from overnight.agent.environments.docker.process import DockerProcess, resume_point
from overnight.agent.environments.docker.references import (
    check_image,
    check_repository,
    check_size,
    check_volume,
)
from overnight.agent.environments.installs import find_uv
from overnight.agent.progress import ProgressLine, StopCheck
from overnight.agent.run.guard import Guard
from overnight.agent.run.taskenv import BUILD_PREFIXES, TaskEnv
from overnight.errors import ConfigError, TaskRunError
from overnight.spec import TaskSpec

CA_PATH = "/etc/overnight/ca-bundle.crt"  # where the agent's CA bundle is mounted
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's, Ubuntu's, Alpine's
CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
LOG_CONFIG = {"max-size": "100m", "max-file": "5"}  # json-file: the logs API and adoption need it
NO_GPU_DRIVER = "could not select device driver"  # dockerd without the NVIDIA Container Toolkit
GPU_FIX = (
    "install the NVIDIA Container Toolkit and restart dockerd, "
    "or run the agent with --gpus none or --env-mode venv"
)


def cannot_hand_gpus(why: str) -> str:
    """The error for an engine without the NVIDIA Container Toolkit, naming the fix."""
    return f"this Docker engine cannot hand GPUs to containers ({why}); {GPU_FIX}"


@dataclasses.dataclass(frozen=True)
class AdoptedContainer(AdoptedTask):
    """A container this agent started before it restarted, found again by its labels."""

    what: ClassVar[str] = "container"

    task_id: str
    container: Any  # docker.models.containers.Container
    state: str  # docker's status: "running", "exited", "created", ...
    exit_code: int | None  # None while it runs
    guard: Guard | None = None  # this agent's, over the running container

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "restarting")

    @property
    def process(self) -> DockerProcess:
        return DockerProcess(self.container, guard=self.guard)

    def process_since(self, since: float | None) -> DockerProcess:
        """A process whose output starts after ``since`` (a :attr:`DockerProcess.last_log_time`)."""
        return DockerProcess(self.container, since=since, guard=self.guard)

    def process_after(self, stored: Sequence[tuple[float, str]]) -> DockerProcess:
        """A process whose output starts after the task log's ``stored`` tail (time, line)."""
        return self.process_since(resume_point(self.container, stored))

    def discard(self) -> None:
        self.process.discard()


class DockerEnvironment(Environment):
    """Runs tasks in containers from cached environment images."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        agent_name: str,
        default_image: str | None = None,
        cache_volume: str | None = None,
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
        pip_conf: Path | None = None,
        uv_toml: Path | None = None,
        build_network: str | None = None,
        task_env: Mapping[str, str] | None = None,
        uv_bin: Path | None = None,
        guard_window: float | None = None,
        guard_env: Mapping[str, str] | None = None,
    ) -> None:
        for what, path in (("ca_bundle", ca_bundle), ("pip_conf", pip_conf), ("uv_toml", uv_toml)):
            if path is not None and not path.is_file():
                raise ConfigError(f"{what} {path} is not a file; point {what} at an existing file")
        check_repository("docker_image_repo", image_repo)
        check_size("docker_shm_size", shm_size)
        if default_image:
            check_image("default_image", default_image)
        if cache_volume:
            check_volume("docker_cache_volume", cache_volume)
        self.client = client
        self.agent_name = agent_name
        self.default_image = default_image
        self.ca_bundle = ca_bundle
        self.shm_size = shm_size
        self.network = network
        self.build_network = build_network
        self.mounts = tuple(parse_mount(m) for m in mounts)
        self.uid_gid = parse_user(uid_gid) if uid_gid else default_user()
        self.task_env = dict(task_env or {})
        # Seconds a task's container outlives its dead agent, waiting for an adoption (None:
        # no guard, the container runs on until an agent of this name comes back).
        self.guard_window = guard_window
        self.guard_env = dict(guard_env or {})
        state = state_dir or Path(tempfile.gettempdir()) / f"overnight-docker-{os.getuid()}"
        installer = Installer(
            client,
            builder=agent_name,
            user=self.uid_gid,
            cache_volume=cache_volume,
            ca_bundle=ca_bundle,
            env=dict(installer_env or {}),
            network=build_network,
            pip_conf=pip_conf,
            uv_toml=uv_toml,
            uv_bin=uv_bin,
        )
        self.images = EnvImages(
            client,
            installer,
            state_dir=state,
            repo=image_repo,
            max_images=max_images,
            max_gb=max_gb,
        )

    @classmethod
    def from_config(
        cls, client: docker.DockerClient, config: AgentConfig, environ: Mapping[str, str]
    ) -> DockerEnvironment:
        """The environment an agent with ``config`` runs; ``environ`` is the agent's own.

        The agent's ``PIP_*`` and ``UV_*`` variables reach the install containers (under
        ``docker_installer_env``), except those naming host files: ``PIP_CONFIG_FILE`` and
        ``UV_CONFIG_FILE`` are the default ``pip_conf`` and ``uv_toml``, copied in. The agent's
        uv binary is copied into builds on images without their own.
        """
        host_paths = ("PIP_CONFIG_FILE", "UV_CONFIG_FILE", "PIP_CERT")
        installer_env = {
            k: v for k, v in environ.items() if k.startswith(BUILD_PREFIXES) and k not in host_paths
        }
        installer_env.update(config.docker_installer_env)
        pip_conf = config.docker_pip_conf or environ.get("PIP_CONFIG_FILE")
        uv_toml = config.docker_uv_toml or environ.get("UV_CONFIG_FILE")
        return cls(
            client,
            agent_name=config.agent_name,
            default_image=config.default_image,
            ca_bundle=ca_bundle_path(config.docker_ca_bundle),
            network=config.docker_network,
            build_network=config.docker_build_network,
            mounts=config.docker_mounts,
            shm_size=config.docker_shm_size,
            uid_gid=config.docker_user,
            image_repo=config.docker_image_repo,
            cache_volume=config.docker_cache_volume,
            max_images=config.max_envs,
            max_gb=config.max_env_gb,
            state_dir=config.cache_path / "docker",
            installer_env=installer_env,
            pip_conf=Path(pip_conf).expanduser() if pip_conf else None,
            uv_toml=Path(uv_toml).expanduser() if uv_toml else None,
            task_env=TaskEnv.from_config(config, environ).task(host_paths=False),
            uv_bin=Path(uv) if (uv := find_uv()) else None,
            guard_window=adoption_window(config.lost_ttl, config.heartbeat_interval),
            guard_env=environ,
        )

    def check_engine(self) -> None:
        """Refuse at the agent's start what this engine would refuse for every task: a network
        it does not have, a mount whose host path does not exist."""
        networks = (("docker_network", self.network), ("docker_build_network", self.build_network))
        for setting, network in networks:
            if not network or network.startswith("container:"):
                continue
            try:
                self.client.networks.get(network)
            except docker.errors.NotFound:
                known = ", ".join(sorted(n.name for n in self.client.networks.list()))
                raise ConfigError(
                    f"{setting} {network!r} is not a network of this Docker engine (it has "
                    f"{known}); create it with `docker network create {network}` or set "
                    f"{setting} to one of those"
                ) from None
        for mount in self.mounts:
            source = str(mount["Source"])
            if not os.path.exists(source):
                raise ConfigError(
                    f"docker_mounts: {source} (mounted at {mount['Target']}) does not exist on "
                    "this host; create it or drop it from docker_mounts (--docker-mount)"
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
        self, spec: TaskSpec, log: ProgressLine, should_stop: StopCheck, *, image: str | None = None
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

    def seen_path(self, workspace: Path, relative: str) -> str:
        return posixpath.join(WORKSPACE, relative)

    def run_options(self, prepared: Prepared, request: RunRequest) -> dict[str, Any]:
        """The keyword arguments of ``client.containers.create`` for this task."""
        workdir = posixpath.normpath(request.workdir or ".")
        if workdir.startswith(("/", "..")):
            raise TaskRunError(
                f"working directory {request.workdir!r} is outside the repository; "
                "record the task from inside the repository"
            )
        env = self.task_environment()
        mounts = [docker.types.Mount(WORKSPACE, str(request.workspace), type="bind")]
        if self.ca_bundle is not None:
            mounts.append(docker.types.Mount(CA_PATH, str(self.ca_bundle), "bind", read_only=True))
            env.update(dict.fromkeys(CA_VARIABLES, CA_PATH), UV_NATIVE_TLS="1")
        mounts.extend(self.mounts)
        env.update(request.env)  # the task's own variables win
        options: dict[str, Any] = {
            "image": prepared.details["image_id"],
            "command": list(request.argv),
            "entrypoint": "",
            "working_dir": posixpath.join(WORKSPACE, workdir) if workdir != "." else WORKSPACE,
            **confined(self.uid_gid),
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

    def task_environment(self) -> dict[str, str]:
        """A container's variables before the CA bundle's and the task's own: the agent's
        allowlist of those that mean the same inside (:mod:`overnight.agent.run.taskenv`, with
        ``env`` from its settings), and a HOME that the task's user can write."""
        return {"HOME": "/tmp", "USER": "overnight", "LOGNAME": "overnight", **self.task_env}

    def start(self, prepared: Prepared, request: RunRequest) -> DockerProcess:
        options = self.run_options(prepared, request)
        if self.uid_gid != own_user():  # a root agent hands the tree to the task's user
            uid, gid = (int(n) for n in self.uid_gid.split(":"))
            try:
                hand_over(request.workspace, uid, gid)
            except OSError as exc:
                raise TaskRunError(f"cannot hand the workspace to {self.uid_gid}: {exc}") from exc
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
            why = str(exc.explanation)
            if NO_GPU_DRIVER in why:
                why = cannot_hand_gpus(why)
            raise TaskRunError(f"cannot start the task's container: {why}") from exc
        return DockerProcess(container, guard=self._guard(str(container.id)))

    def _guard(self, container_id: str) -> Guard | None:
        if self.guard_window is None:
            return None
        return start_container_guard(container_id, self.guard_window, self.guard_env)

    def gpu_problem(self, gpu_id: str) -> str | None:
        """Why this engine cannot hand GPU ``gpu_id`` to a container (no NVIDIA Container
        Toolkit), or None: it can, or there is no local image to try it with."""
        image = self._probe_image()
        if image is None:
            return None
        request = docker.types.DeviceRequest(device_ids=[gpu_id], capabilities=[["gpu"]])
        labels = {"overnight.role": "probe", "overnight.builder": self.agent_name}
        try:
            container = self.client.containers.create(
                image, ["true"], entrypoint="", device_requests=[request], labels=labels,
                network_disabled=True, **confined(self.uid_gid),
            )  # fmt: skip
        except docker.errors.APIError:
            return None  # not about GPUs; the task's own start will say what it is
        try:
            container.start()
            container.wait(timeout=60)
        except docker.errors.APIError as exc:
            why = str(exc.explanation)
            return why if NO_GPU_DRIVER in why else None
        except Exception:  # it started (the GPU was handed out) and then misbehaved: not ours
            return None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        return None

    def _probe_image(self) -> str | None:
        """A local image to create a probe container from (its command need not even exist)."""
        if self.default_image:
            with contextlib.suppress(docker.errors.DockerException):
                return str(self.client.images.get(self.default_image).id)
        with contextlib.suppress(docker.errors.DockerException):
            for image in self.client.images.list():
                return str(image.id)
        return None

    def adopt(self) -> list[AdoptedContainer]:
        """This agent's task containers, running or exited, found by their labels.

        Also removes install and GPU probe containers this agent left when it died mid-way.
        """
        for role in ("build", "probe"):
            for stale in self.client.containers.list(
                all=True,
                filters={
                    "label": [f"overnight.role={role}", f"overnight.builder={self.agent_name}"]
                },
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
            end_guards(str(container.id))  # the dead run's: this run guards it now
            found.append(
                AdoptedContainer(
                    task_id=str(container.labels.get("overnight.task", "")),
                    container=container,
                    state=status,
                    exit_code=int(state.get("ExitCode", -1)) if done else None,
                    guard=None if done else self._guard(str(container.id)),
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


def parse_user(text: str) -> str:
    """A task user, ``UID:GID`` (numbers); only a root agent may name another than its own."""
    uid, sep, gid = text.strip().partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise ConfigError(f"docker user {text!r} is not UID:GID; e.g. 1000:1000")
    user = f"{int(uid)}:{int(gid)}"
    if user != own_user() and os.getuid() != 0:
        raise ConfigError(
            f"docker user {user} is not this agent's ({own_user()}): only an agent running as "
            "root can hand workspaces to another user; drop docker_user or run the agent as root"
        )
    return user


def own_user() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def default_user() -> str:
    """The tasks' user when ``docker_user`` names none: the agent's own, but never root."""
    return NOBODY if os.getuid() == 0 else own_user()


def hand_over(tree: Path, uid: int, gid: int) -> None:
    """Make ``uid:gid`` the owner of everything under ``tree`` (links themselves, not targets).

    A file hard-linked from elsewhere (git objects shared with the cached tree) is replaced by
    a copy of its own first: chowning the shared file would hand the other tree's to the task.
    """
    os.lchown(tree, uid, gid)
    for folder, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                handle, copy = tempfile.mkstemp(dir=folder, prefix=".overnight-")
                os.close(handle)
                shutil.copy2(path, copy)
                os.replace(copy, path)
            os.lchown(path, uid, gid)


def ca_bundle_path(setting: str) -> Path | None:
    """``docker_ca_bundle``: ``system`` (the host's bundle, when it has one), ``none``, or a path."""
    if setting.strip().lower() == "system":
        return SYSTEM_CA_BUNDLE if SYSTEM_CA_BUNDLE.is_file() else None
    if setting.strip().lower() in ("none", ""):
        return None
    return Path(setting).expanduser()
