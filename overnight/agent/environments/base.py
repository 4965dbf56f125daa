"""The extension point for where a task runs: a base class that venv and docker implement.

An :class:`Environment` turns a spec's requirements and Python version into something a command
can run in (``prepare``, cached by a key), then starts the recorded command there (``start``)
and hands back a :class:`Process` whose merged output the runner streams to the task's log.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from overnight.agent.progress import ProgressLine, StopCheck
from overnight.spec import TaskSpec


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A ready environment: its cache key, whether it was built now, and implementation details."""

    key: str
    built: bool  # False when reused from the cache
    python: str  # the interpreter version the task will run with (major.minor.micro)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # venv path, image id...
    warnings: tuple[str, ...] = ()  # e.g. "recorded Python 3.12 not found; using 3.11.7"


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """What to run, where, and with which GPUs."""

    task_id: str
    argv: tuple[str, ...]
    workspace: Path  # the reconstructed repo root on the agent's disk
    workdir: str  # relative to the repo root
    env: dict[str, str]  # task env plus OVERNIGHT_* and CUDA_* (not the agent's base env)
    gpu_ids: tuple[str, ...] = ()
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


class Process(abc.ABC):
    """A started task. Output is stdout and stderr merged, as raw bytes."""

    @abc.abstractmethod
    def output(self) -> Iterator[bytes]:
        """Yield output chunks as they arrive; ends when the process closes its output."""

    @abc.abstractmethod
    def poll(self) -> int | None:
        """The exit code, or None while it runs."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit code; None if still running after ``timeout`` seconds."""

    @abc.abstractmethod
    def terminate(self) -> None:
        """Ask the whole task to stop (SIGTERM to its process group or container)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the whole task now (SIGKILL)."""

    @property
    @abc.abstractmethod
    def ident(self) -> str:
        """A handle that identifies the process on this agent (pid, container id)."""


class Environment(abc.ABC):
    """A way of running tasks; implementations are chosen by ``name`` from configuration."""

    name: ClassVar[str]

    @abc.abstractmethod
    def key(self, spec: TaskSpec) -> str:
        """The cache key: a hash of everything that defines the environment."""

    @abc.abstractmethod
    def prepare(self, spec: TaskSpec, log: ProgressLine, should_stop: StopCheck) -> Prepared:
        """Build the environment for ``spec`` or reuse a cached one with the same key."""

    @abc.abstractmethod
    def start(self, prepared: Prepared, request: RunRequest) -> Process:
        """Start the recorded command in the prepared environment."""
