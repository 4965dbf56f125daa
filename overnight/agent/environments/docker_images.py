"""Environment images for Docker mode: built once per key, committed, reused, evicted.

An environment image is the task's base image plus a venv at :data:`VENV` holding the task's
requirements. It is built by running an install container from the base image (uv when the
image has it, pip otherwise, with a persistent package-cache volume) and committing it as
``<repo>:<key>``. The key covers the base image id, the normalized requirements, the image's
Python version and its installer version, so a later task with the same key installs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shlex
import tarfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from overnight.agent.environments.base import LogSink, StopCheck
from overnight.agent.environments.keys import environment_key, normalize_requirements
from overnight.agent.locks import FileLock
from overnight.errors import EnvironmentBuildError

VENV = "/opt/overnight/venv"
CACHE_MOUNT = "/var/cache/overnight"
BUILD_DIR = "/overnight-build"  # copied into the install container, deleted before the commit
RECIPE = "overnight-docker-env/2"  # bump when the install script changes what it builds
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PROBE = """
python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' || exit 97
if command -v uv >/dev/null 2>&1; then uv --version
elif python3 -m pip --version >/dev/null 2>&1; then python3 -m pip --version | cut -d' ' -f1,2
else echo ensurepip; fi
"""

_INSTALL = f"""set -eu
B={BUILD_DIR}
V={VENV}
. "$B/env"
python3 -m venv --system-site-packages --without-pip "$V"
if [ -s "$B/requirements.txt" ]; then
  if command -v uv >/dev/null 2>&1; then
    echo "overnight: installing the requirements with $(uv --version)"
    UV_CACHE_DIR={CACHE_MOUNT}/uv UV_LINK_MODE=copy \\
      uv pip install --python "$V/bin/python" -r "$B/requirements.txt"
  else
    "$V/bin/python" -m pip --version >/dev/null 2>&1 || "$V/bin/python" -m ensurepip -q
    echo "overnight: installing the requirements with $("$V/bin/python" -m pip --version)"
    # a wheelhouse, not only pip's HTTP cache: proxies that drop cache headers defeat that one
    W={CACHE_MOUNT}/pip-files
    P="$V/bin/python -m pip --cache-dir {CACHE_MOUNT}/pip --no-input --disable-pip-version-check"
    $P download --progress-bar off --dest "$W" -r "$B/requirements.txt"
    $P install --progress-bar off --no-index --find-links "$W" -r "$B/requirements.txt"
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
    installer: str  # "uv 0.4.1", "pip 23.0.1" or "ensurepip"
    config: dict[str, Any]  # the image's Config (Env, Cmd, Entrypoint, User, WorkingDir)


@dataclasses.dataclass(frozen=True)
class EnvImage:
    """An environment image, ready to run tasks from."""

    tag: str
    id: str
    key: str
    built: bool
    base: BaseImage


def requirements_digest(requirements: str) -> str:
    return hashlib.sha256(normalize_requirements(requirements).encode()).hexdigest()


class EnvImages:
    """Builds, finds and evicts environment images in one Docker engine.

    ``state_dir`` holds the build locks (so two processes on one host building the same key
    wait for one build) and a last-use mark per key (eviction is least recently used).
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        agent_name: str,
        state_dir: Path,
        repo: str = "overnight-env",
        cache_volume: str = "overnight-pkg-cache",
        ca_bundle: Path | None = None,
        installer_env: Mapping[str, str] | None = None,
        network: str | None = None,
        max_images: int = 20,
        max_gb: float | None = None,
    ) -> None:
        self.client = client
        self.agent_name = agent_name
        self.state_dir = state_dir
        self.repo = repo
        self.cache_volume = cache_volume
        self.ca_bundle = ca_bundle
        self.installer_env = dict(installer_env or {})
        self.network = network
        self.max_images = max_images
        self.max_gb = max_gb
        self._probes: dict[str, BaseImage] = {}
        self._probe_lock = threading.Lock()

    def base(self, name: str) -> BaseImage:
        """The base image ``name``, pulled once when absent, probed for Python and installer."""
        try:
            image = self.client.images.get(name)
        except docker.errors.ImageNotFound:
            try:
                image = self.client.images.pull(name)
            except docker.errors.APIError as exc:
                raise EnvironmentBuildError(
                    f"image {name} is absent and cannot be pulled: {_explain(exc)}"
                ) from exc
        with self._probe_lock:
            if image.id not in self._probes:
                self._probes[image.id] = self._probe(name, image)
            return self._probes[image.id]

    def key(self, base: BaseImage, requirements: str) -> str:
        return environment_key(
            base.id, normalize_requirements(requirements), base.python, base.installer, RECIPE
        )

    def tag(self, key: str) -> str:
        return f"{self.repo}:{key}"

    def ensure(
        self, base: BaseImage, requirements: str, log: LogSink, should_stop: StopCheck
    ) -> EnvImage:
        """The environment image for ``requirements`` on ``base``: reused, or built now."""
        key = self.key(base, requirements)
        tag = self.tag(key)
        found = self._find(tag)
        if found is None:
            with self._lock(key, log, should_stop):
                found = self._find(tag)  # another process may have built it while we waited
                if found is None:
                    image_id = self._build(base, key, requirements, log, should_stop)
                    self._touch(key)
                    self.evict(keep={key})
                    return EnvImage(tag=tag, id=image_id, key=key, built=True, base=base)
        self._touch(key)
        return EnvImage(tag=tag, id=found, key=key, built=False, base=base)

    def evict(self, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Remove least recently used environment images past ``max_images`` or ``max_gb``.

        Never removes an image a container (running or stopped) was created from, nor the
        keys in ``keep``. Returns the removed tags.
        """
        in_use = {c.get("ImageID") for c in self.client.api.containers(all=True)}
        mine = []
        for image in self.client.images.list(name=self.repo, filters={"label": "overnight.key"}):
            key = image.labels.get("overnight.key", "")
            if self.tag(key) in image.tags:
                mine.append((self._last_use(key, image), key, image))
        mine.sort(key=lambda item: item[0], reverse=True)  # newest first
        sizes = [self._own_size(image) for _, _, image in mine]
        total = sum(sizes)
        removed: list[str] = []
        for index in range(len(mine) - 1, -1, -1):  # oldest first
            _, key, image = mine[index]
            over_count = len(mine) - len(removed) > self.max_images
            over_size = self.max_gb is not None and total > self.max_gb * 1024**3
            if not (over_count or over_size):
                break
            if key in keep or image.id in in_use:
                continue
            try:
                self.client.images.remove(image.id)
            except docker.errors.APIError:
                continue  # taken into use meanwhile, or a child image depends on it
            removed.append(self.tag(key))
            total -= sizes[index]
            (self.state_dir / "used" / key).unlink(missing_ok=True)
        return removed

    def _probe(self, name: str, image: Any) -> BaseImage:
        try:
            container = self.client.containers.create(
                image.id, ["/bin/sh", "-c", _PROBE], entrypoint="", user="0:0"
            )
        except docker.errors.APIError as exc:
            raise EnvironmentBuildError(f"image {name} cannot be run: {_explain(exc)}") from exc
        try:
            container.start()
            code = int(container.wait()["StatusCode"])
            raw = container.logs(stdout=True, stderr=False)
        except docker.errors.APIError as exc:
            raise EnvironmentBuildError(
                f"image {name} cannot run /bin/sh: {_explain(exc)}; use an image with a shell"
            ) from exc
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        lines = raw.decode("utf-8", "replace").split()
        if code != 0 or not lines:
            raise EnvironmentBuildError(
                f"image {name} has no python3: use an image with Python 3 (e.g. python:3.11-slim)"
            )
        python, installer = lines[0], " ".join(lines[1:]) or "ensurepip"
        return BaseImage(
            name=name, id=image.id, python=python, installer=installer, config=image.attrs["Config"]
        )

    def _find(self, tag: str) -> str | None:
        try:
            return str(self.client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None

    @contextlib.contextmanager
    def _lock(self, key: str, log: LogSink, should_stop: StopCheck) -> Iterator[None]:
        """Held while ``key`` is built: other threads and processes on this host wait."""
        lock = FileLock(self.state_dir / "locks" / f"{self.repo.replace('/', '_')}-{key}.lock")
        if not lock.try_acquire():
            log(f"waiting for another build of environment {key}")
            if not lock.acquire(None, should_stop=should_stop):
                raise EnvironmentBuildError("environment build canceled")
        try:
            yield
        finally:
            lock.release()

    def _build(
        self, base: BaseImage, key: str, requirements: str, log: LogSink, should_stop: StopCheck
    ) -> str:
        log(f"building environment {key} on {base.name} (Python {base.python}, {base.installer})")
        container = self.client.containers.create(
            base.id,
            ["/bin/sh", f"{BUILD_DIR}/install.sh"],
            entrypoint="",
            user="0:0",
            labels={"overnight.role": "build", "overnight.builder": self.agent_name},
            mounts=[docker.types.Mount(CACHE_MOUNT, self.cache_volume, type="volume")],
            network_mode=self.network,
        )
        try:
            container.put_archive("/", self._build_files(requirements))
            container.start()
            tail = _follow(container, log, should_stop)
            code = int(container.wait()["StatusCode"])
            if code != 0:
                raise EnvironmentBuildError(
                    f"requirements failed to install on {base.name} (exit code {code}): "
                    f"{tail or 'no output'}; fix the requirements and enqueue again"
                )
            image = container.commit(
                repository=self.repo, tag=key, changes=self._changes(base, key, requirements)
            )
            log(f"environment {key} built as {self.tag(key)}")
            return str(image.id)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)

    def _build_files(self, requirements: str) -> bytes:
        env = dict(self.installer_env)
        files = {"install.sh": _INSTALL.encode(), "requirements.txt": requirements.encode()}
        if self.ca_bundle is not None:
            files["ca.crt"] = self.ca_bundle.read_bytes()
            ca = f"{BUILD_DIR}/ca.crt"
            env.update(SSL_CERT_FILE=ca, PIP_CERT=ca, REQUESTS_CA_BUNDLE=ca, UV_NATIVE_TLS="1")
        files["env"] = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            folder = tarfile.TarInfo(BUILD_DIR.strip("/"))
            folder.type, folder.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(folder)
            for name, data in files.items():
                info = tarfile.TarInfo(f"{BUILD_DIR.strip('/')}/{name}")
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def _changes(self, base: BaseImage, key: str, requirements: str) -> list[str]:
        """Dockerfile instructions for the commit: the base image's config back, venv on PATH."""
        config = base.config
        env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
        labels = {
            "overnight.role": "env",
            "overnight.key": key,
            "overnight.requirements": requirements_digest(requirements),
            "overnight.base": base.id,
            "overnight.base-name": base.name,
            "overnight.python": base.python,
            "overnight.installer": base.installer,
        }
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

    def _touch(self, key: str) -> None:
        mark = self.state_dir / "used" / key
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()

    def _last_use(self, key: str, image: Any) -> float:
        try:
            return (self.state_dir / "used" / key).stat().st_mtime
        except OSError:
            return 0.0  # never used from this state dir: evicted first

    def _own_size(self, image: Any) -> int:
        """Bytes this image adds to its base (the shared base layers are not counted)."""
        size = int(image.attrs.get("Size", 0))
        try:
            base = self.client.images.get(image.labels.get("overnight.base", ""))
            return max(0, size - int(base.attrs.get("Size", 0)))
        except docker.errors.APIError:
            return size


def _follow(container: Any, log: LogSink, should_stop: StopCheck) -> str:
    """Stream a container's output lines to ``log`` until it exits; kill it on ``should_stop``.

    Returns the last non-empty output line (the installer's error, when it failed).
    """
    last: list[str] = [""]

    def pump() -> None:
        buffer = b""
        for chunk in container.logs(stream=True, follow=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    last[0] = line
                    log(line)
        if buffer.strip():
            last[0] = buffer.decode("utf-8", "replace").rstrip()
            log(last[0])

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
    return last[0]


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation if isinstance(exc.explanation, str) else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
