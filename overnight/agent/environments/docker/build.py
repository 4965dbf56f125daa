"""Making images in containers: probing a base image, installing requirements, committing.

An environment image is a base image plus a venv at :data:`VENV` (with the base image's own
packages visible, so a CUDA image's preinstalled torch satisfies a ``torch`` requirement). It is
made by an install container that gets its script, requirements, CA bundle, installer settings
(variables, pip.conf, uv.toml) and the agent's uv binary copied in and deletes them before the
commit, so no credential ends up in the image. Requirements install with uv, as in venv mode:
the image's own uv, else the agent's (which needs no registry: it is copied in), else, where
that one cannot run (a musl image), the image's pip. Installing runs the requirements' own code
(an sdist's setup.py), so install and probe containers are :func:`confined` like tasks, and each
build downloads into a folder of its own, gone with it: only a ``cache_volume`` named in the
settings is shared by builds (at :data:`CACHE_MOUNT`), and then any build can plant packages
for the next. A standalone image is an environment image plus a task's reconstructed tree,
whose command is the task's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import posixpath
import shlex
import tarfile
import tempfile
import threading
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import docker.utils
import requests.exceptions

from overnight.agent.environments.installs import TAIL_LINES, install_error
from overnight.agent.progress import ProgressLine, StopCheck
from overnight.agent.run.logbatch import Output
from overnight.errors import EnvironmentBuildError, InstallError

IMAGE_DIR = "/opt/overnight"  # the builds' own: the venv, the install files while it runs
VENV = f"{IMAGE_DIR}/venv"
WORKSPACE = "/workspace"  # where a task's tree is: mounted for runs, copied in standalone images
CACHE_MOUNT = "/var/cache/overnight"  # where a shared cache_volume is mounted
BUILD_DIR = f"{IMAGE_DIR}/build"  # copied into the install container, deleted before the commit
OWN_CACHE = f"{BUILD_DIR}/cache"  # a build's downloads when no cache volume is shared
AGENT_UV = f"{BUILD_DIR}/uv"  # the agent's uv binary, copied in for probes and installs
RECIPE = "overnight-docker-env/4"  # part of every key: bump when the install script changes
NOBODY = "65534:65534"  # nobody:nogroup, the user of a root agent's containers by default
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

NO_VENV = 98  # the install script's exit code when python3 cannot make a venv

_PROBE = f"""
python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' || exit 97
if command -v uv >/dev/null 2>&1; then uv --version | cut -d' ' -f1,2
elif [ -x {AGENT_UV} ] && {AGENT_UV} --version >/dev/null 2>&1; then
  echo "$({AGENT_UV} --version | cut -d' ' -f1,2) (agent's)"
elif python3 -m pip --version >/dev/null 2>&1; then python3 -m pip --version | cut -d' ' -f1,2
else echo ensurepip; fi
"""

_INSTALL = f"""set -eu
B={BUILD_DIR}
V={VENV}
C=$1
. "$B/env"
mkdir -p "$C"
python3 -m venv --system-site-packages --without-pip "$V" || exit {NO_VENV}
if [ -s "$B/requirements.txt" ]; then
  U=""
  if command -v uv >/dev/null 2>&1; then U=uv
  elif [ -x "$B/uv" ] && "$B/uv" --version >/dev/null 2>&1; then U="$B/uv"
  fi
  if [ -n "$U" ]; then
    echo "overnight: installing the requirements with $("$U" --version)"
    UV_CACHE_DIR="$C/uv" UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never NO_COLOR=1 \\
      "$U" pip install --python "$V/bin/python" -r "$B/requirements.txt"
  else
    "$V/bin/python" -m pip --version >/dev/null 2>&1 || "$V/bin/python" -m ensurepip -q
    echo "overnight: installing the requirements with $("$V/bin/python" -m pip --version)"
    # a wheelhouse, not only pip's HTTP cache: proxies that drop cache headers defeat that one;
    # the index stays open to the install, which fetches the sdists' build requirements
    W="$C/pip-files"
    P="$V/bin/python -m pip --cache-dir $C/pip --no-input --disable-pip-version-check"
    $P download --progress-bar off --dest "$W" -r "$B/requirements.txt"
    $P install --progress-bar off --find-links "$W" -r "$B/requirements.txt"
  fi
else
  echo "overnight: no requirements to install"
fi
rm -rf "$B"
"""


@dataclasses.dataclass(frozen=True)
class BaseImage:
    """A resolved base image and what its probe found inside it."""

    name: str
    id: str
    python: str  # major.minor.micro of its python3
    installer: str  # "uv 0.4.1", "uv 0.4.1 (agent's)", "pip 23.0.1" or "ensurepip"
    config: dict[str, Any]  # the image's Config (Env, Cmd, Entrypoint, User, WorkingDir)


def confined(user: str) -> dict[str, Any]:
    """Options of every container overnight starts: ``user`` (never root by default), no
    capabilities, and no way to gain any (setuid binaries, file capabilities) inside."""
    return {"user": user, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}


@dataclasses.dataclass(frozen=True)
class Installer:
    """How probe and install containers run: user, cache volume, CA bundle, installer settings,
    network."""

    client: docker.DockerClient
    builder: str  # the agent's name, on the install container's labels
    user: str = NOBODY  # UID:GID the probes and installs run as (the tasks' user)
    cache_volume: str | None = None  # shared by every build; None: each build downloads anew
    ca_bundle: Path | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # PIP_INDEX_URL, UV_...
    network: str | None = None
    pip_conf: Path | None = None  # copied in as PIP_CONFIG_FILE
    uv_toml: Path | None = None  # copied in as UV_CONFIG_FILE
    uv_bin: Path | None = None  # the agent's uv, copied in where the image has none

    def probe(self, name: str, image: Any) -> BaseImage:
        """Run the image once to find its Python version and installer (uv, pip)."""
        try:
            container = self.client.containers.create(
                image.id,
                ["/bin/sh", "-c", _PROBE],
                entrypoint="",
                labels={"overnight.role": "probe", "overnight.builder": self.builder},
                network_disabled=True,
                **confined(self.user),
            )
        except docker.errors.APIError as exc:
            raise EnvironmentBuildError(f"image {name} cannot be run: {explain(exc)}") from exc
        try:
            if self.uv_bin is not None:
                with self._archive({}) as archive:
                    container.put_archive("/", archive)
            container.start()
            code = int(container.wait()["StatusCode"])
            raw = container.logs(stdout=True, stderr=False)
        except docker.errors.APIError as exc:
            raise EnvironmentBuildError(
                f"image {name} cannot run /bin/sh: {explain(exc)}; use an image with a shell"
            ) from exc
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        words = raw.decode("utf-8", "replace").split()
        if code != 0 or not words:
            raise EnvironmentBuildError(
                f"image {name} has no python3: use an image with Python 3 (e.g. python:3.11-slim)"
            )
        return BaseImage(
            name=name,
            id=image.id,
            python=words[0],
            installer=" ".join(words[1:]) or "ensurepip",
            config=image.attrs["Config"],
        )

    def build(
        self,
        base: BaseImage,
        repo: str,
        key: str,
        requirements: str,
        labels: Mapping[str, str],
        log: ProgressLine,
        should_stop: StopCheck,
    ) -> str:
        """Install ``requirements`` on ``base`` and commit the result as ``repo:key``; its id."""
        log(f"building environment {key} on {base.name} (Python {base.python}, {base.installer})")
        mounts = []
        if self.cache_volume:
            mounts.append(docker.types.Mount(CACHE_MOUNT, self.cache_volume, type="volume"))
        container = self.client.containers.create(
            base.id,
            ["/bin/sh", f"{BUILD_DIR}/install.sh", CACHE_MOUNT if self.cache_volume else OWN_CACHE],
            entrypoint="",
            environment={"HOME": "/tmp"},  # the user may have no home, or none it can write
            labels={"overnight.role": "build", "overnight.builder": self.builder},
            mounts=mounts,
            network_mode=self.network,
            **confined(self.user),
        )
        try:
            with self._archive(self._files(requirements)) as archive:
                container.put_archive("/", archive)
            container.start()
            tail = _follow(container, log, should_stop)
            code = int(container.wait()["StatusCode"])
            if code == NO_VENV:
                raise EnvironmentBuildError(
                    f"image {base.name} cannot make a venv ({install_error(tail)}); use an image "
                    "whose python3 has the venv module (Debian: python3-venv)"
                )
            if code != 0:
                raise InstallError(
                    f"requirements failed to install on {base.name} (exit code {code}): "
                    f"{install_error(tail)}; fix the requirements and enqueue again (a retry "
                    "reuses these)"
                )
            image = container.commit(repository=repo, tag=key, changes=_changes(base, labels))
            log(f"environment {key} built as {repo}:{key}")
            return str(image.id)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)

    def _files(self, requirements: str) -> dict[str, bytes]:
        """The install's files in :data:`BUILD_DIR` (the uv binary aside): script,
        requirements, CA bundle, installer settings, and the variables that point at them."""
        env = dict(self.env)
        files = {"install.sh": _INSTALL.encode(), "requirements.txt": requirements.encode()}
        if self.ca_bundle is not None:
            files["ca.crt"] = self.ca_bundle.read_bytes()
            ca = f"{BUILD_DIR}/ca.crt"
            env.update(SSL_CERT_FILE=ca, PIP_CERT=ca, REQUESTS_CA_BUNDLE=ca, UV_NATIVE_TLS="1")
        for name, path, variable in (
            ("pip.conf", self.pip_conf, "PIP_CONFIG_FILE"),
            ("uv.toml", self.uv_toml, "UV_CONFIG_FILE"),
        ):
            if path is not None:
                files[name] = path.read_bytes()
                env[variable] = f"{BUILD_DIR}/{name}"
        files["env"] = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()
        return files

    @contextlib.contextmanager
    def _archive(self, files: Mapping[str, bytes]) -> Iterator[typing.IO[bytes]]:
        """A tar of ``files`` in :data:`BUILD_DIR` and the agent's uv binary, to copy into a
        container; everything in it belongs to the installer's user (a volume's root too)."""
        folders = {IMAGE_DIR: 0o755, BUILD_DIR: 0o700}
        if self.cache_volume:
            folders[CACHE_MOUNT] = 0o700
        uid, gid = (int(n) for n in self.user.split(":"))

        def owned(info: tarfile.TarInfo, mode: int) -> tarfile.TarInfo:
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, int(time.time())
            info.uname = info.gname = ""
            return info

        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for where, mode in folders.items():
                    folder = tarfile.TarInfo(where.strip("/"))
                    folder.type = tarfile.DIRTYPE
                    tar.addfile(owned(folder, mode))
                for name, data in files.items():
                    info = tarfile.TarInfo(f"{BUILD_DIR.strip('/')}/{name}")
                    info.size = len(data)
                    tar.addfile(owned(info, 0o600), io.BytesIO(data))
                if self.uv_bin is not None:
                    info = tar.gettarinfo(self.uv_bin, arcname=AGENT_UV.strip("/"))
                    with self.uv_bin.open("rb") as binary:
                        tar.addfile(owned(info, 0o700), binary)
            archive.seek(0)
            yield archive


def commit_standalone(
    client: docker.DockerClient,
    env_image: str,
    tree: Path,
    tag: str,
    *,
    argv: tuple[str, ...],
    workdir: str,
    env: Mapping[str, str],
    labels: Mapping[str, str],
) -> str:
    """``env_image`` plus ``tree`` at :data:`WORKSPACE`, running ``argv``; committed as ``tag``."""
    repository, version = docker.utils.parse_repository_tag(tag)
    workdir = posixpath.normpath(posixpath.join(WORKSPACE, workdir or "."))
    if not (workdir + "/").startswith(WORKSPACE + "/"):
        raise EnvironmentBuildError(f"working directory {workdir} is outside the repository")
    container = client.containers.create(
        env_image,
        list(argv),
        entrypoint="",
        working_dir=workdir,
        environment=dict(env),
        labels={**labels, "overnight.role": "standalone"},
    )
    try:
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                tar.add(tree, arcname=WORKSPACE.strip("/"), filter=_owned_by_root)
            archive.seek(0)
            container.put_archive("/", archive)
        image = container.commit(repository=repository, tag=version or "latest")
        return str(image.id)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _changes(base: BaseImage, labels: Mapping[str, str]) -> list[str]:
    """Dockerfile instructions for the commit: the base image's config back, venv on PATH."""
    config = base.config
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    changes = [
        f"ENV PATH={VENV}/bin:{env.get('PATH', DEFAULT_PATH)}",
        f"ENV VIRTUAL_ENV={VENV}",
        "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()),
        f"CMD {json.dumps(config.get('Cmd') or [])}",
        f"ENTRYPOINT {json.dumps(config.get('Entrypoint') or [])}",
    ]
    if config.get("User"):
        changes.append(f"USER {config['User']}")
    return changes


def _follow(container: Any, log: ProgressLine, should_stop: StopCheck) -> Sequence[str]:
    """Stream a container's output lines to ``log`` until it exits; kill it on ``should_stop``.

    Returns the last :data:`TAIL_LINES` output lines (the installer's error, when it failed).
    """
    last: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def pump() -> None:
        buffer = b""
        for chunk in container.logs(stream=True, follow=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    last.append(line)
                    log(Output(line))
        if buffer.strip():
            last.append(buffer.decode("utf-8", "replace").rstrip())
            log(Output(last[-1]))

    reader = threading.Thread(target=pump, name="overnight-build-log", daemon=True)
    reader.start()
    while True:
        try:
            container.wait(timeout=0.5)
            break
        except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
            if should_stop():
                with contextlib.suppress(docker.errors.APIError):
                    container.kill()
                raise EnvironmentBuildError("environment build canceled") from None
    reader.join(timeout=5)
    return tuple(last)


def explain(exc: docker.errors.APIError) -> str:
    """The engine's reason, one line."""
    text = exc.explanation if isinstance(exc.explanation, str) else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
