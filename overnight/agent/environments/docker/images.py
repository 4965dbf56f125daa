"""The cache of environment images: one per key, built once, reused, evicted when old.

An environment image (see :mod:`overnight.agent.environments.docker.build`) is tagged
``<repo>:<key>``. The key covers the base image id, the normalized requirements, the image's
Python version and its installer version, so a later task with the same key installs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from overnight.agent.environments.cachekeys import environment_key, normalize_requirements
from overnight.agent.environments.docker.build import RECIPE, BaseImage, Installer, explain
from overnight.agent.progress import ProgressLine, StopCheck
from overnight.agent.workspace.locks import FileLock
from overnight.errors import EnvironmentBuildError


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
        installer: Installer,
        *,
        state_dir: Path,
        repo: str = "overnight-env",
        max_images: int = 20,
        max_gb: float | None = None,
    ) -> None:
        self.client = client
        self.state_dir = state_dir
        self.repo = repo
        self.installer = installer
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
                    f"image {name} is absent and cannot be pulled: {explain(exc)}"
                ) from exc
        with self._probe_lock:
            if image.id not in self._probes:
                self._probes[image.id] = self.installer.probe(name, image)
            return self._probes[image.id]

    def key(self, base: BaseImage, requirements: str) -> str:
        return environment_key(
            base.id, normalize_requirements(requirements), base.python, base.installer, RECIPE
        )

    def tag(self, key: str) -> str:
        return f"{self.repo}:{key}"

    def ensure(
        self, base: BaseImage, requirements: str, log: ProgressLine, should_stop: StopCheck
    ) -> EnvImage:
        """The environment image for ``requirements`` on ``base``: reused, or built now."""
        key = self.key(base, requirements)
        tag = self.tag(key)
        found = self._find(tag)
        if found is None:
            with self._lock(key, log, should_stop):
                found = self._find(tag)  # another process may have built it while we waited
                if found is None:
                    labels = self._labels(base, key, requirements)
                    image_id = self.installer.build(
                        base, self.repo, key, requirements, labels, log, should_stop
                    )
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
                self.client.images.remove(image.id, noprune=True)  # keep an untagged base
            except docker.errors.APIError:
                continue  # taken into use meanwhile, or a child image depends on it
            removed.append(self.tag(key))
            total -= sizes[index]
            (self.state_dir / "used" / key).unlink(missing_ok=True)
        return removed

    def _find(self, tag: str) -> str | None:
        try:
            return str(self.client.images.get(tag).id)
        except docker.errors.ImageNotFound:
            return None

    @contextlib.contextmanager
    def _lock(self, key: str, log: ProgressLine, should_stop: StopCheck) -> Iterator[None]:
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

    def _labels(self, base: BaseImage, key: str, requirements: str) -> dict[str, str]:
        return {
            "overnight.role": "env",
            "overnight.key": key,
            "overnight.requirements": requirements_digest(requirements),
            "overnight.base": base.id,
            "overnight.base-name": base.name,
            "overnight.python": base.python,
            "overnight.installer": base.installer,
        }

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
