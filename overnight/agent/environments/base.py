"""The extension point for where a task runs: a base class that venv and docker implement.

An :class:`Environment` turns a spec's requirements and Python version into something a command
can run in (``prepare``, cached by a key), then starts the recorded command there (``start``)
and hands back a :class:`Process` whose merged output the runner streams to the task's log.

The agent outside this package never asks which environment it has: what differs between them
is a method here, most with a default that does nothing. A new kind implements ``key``,
``prepare`` and ``start`` (and a :class:`Process`, or reuses
:class:`~overnight.agent.run.process.LocalProcess`); it overrides ``adopt`` when its tasks outlive
the agent, ``gpu_problem`` when it may be unable to hand a GPU to a task, and its process's
``pids``, ``samplers`` and ``discard`` when it has them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from overnight.agent.progress import ProgressLine, StopCheck
from overnight.spec import TaskSpec

if TYPE_CHECKING:
    from overnight.agent.run.monitor import Sampler


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

    def pids(self) -> set[int]:
        """Every host process of the task now alive: GPU memory they hold is the agent's own.
        Default: none known."""
        return set()

    def samplers(self) -> list[Sampler]:
        """What reads the task's CPU and memory use while it runs. Default: nothing."""
        return []

    def discard(self) -> None:
        """Remove what the run leaves once its output and exit code are saved (a container).
        Default: nothing to remove."""
        return

    def oom_killed(self) -> bool:
        """Whether the host's OOM killer ended it (asked once it exited). Default: not known."""
        return False


class AdoptedTask(abc.ABC):
    """A task's process that this agent started before it restarted, found again."""

    what: ClassVar[str] = "process"  # what the agent's log calls it ("container")
    task_id: str  # "" when it cannot tell
    exit_code: int | None  # None while it runs

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """Whether it still runs (else it ended while no agent watched, with ``exit_code``)."""

    @abc.abstractmethod
    def process_after(self, stored: Sequence[tuple[float, str]]) -> Process:
        """The process, its output starting after the task log's ``stored`` tail (time, line)."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Remove it: its task is no longer this agent's."""


class Environment(abc.ABC):
    """A way of running tasks; implementations are chosen by ``name`` from configuration."""

    name: ClassVar[str]

    @abc.abstractmethod
    def key(self, spec: TaskSpec, *, image: str | None = None) -> str:
        """The cache key: a hash of everything that defines the environment."""

    @abc.abstractmethod
    def prepare(
        self, spec: TaskSpec, log: ProgressLine, should_stop: StopCheck, *, image: str | None = None
    ) -> Prepared:
        """Build the environment for ``spec`` or reuse a cached one with the same key.

        ``image`` is the image the task asked for; an environment without images says in
        ``log`` that it ignores it.
        """

    @abc.abstractmethod
    def start(self, prepared: Prepared, request: RunRequest) -> Process:
        """Start the recorded command in the prepared environment."""

    def describe(self, prepared: Prepared) -> dict[str, Any]:
        """What the task's record keeps of its environment (``overnight show`` prints it)."""
        return {
            "mode": self.name,
            "key": prepared.key,
            "built": prepared.built,
            "python": prepared.python,
        }

    def adopt(self) -> Sequence[AdoptedTask]:
        """This agent's task processes that outlived its previous run (containers), found
        when it starts again under the same name. Default: none outlive their agent."""
        return ()

    def seen_path(self, workspace: Path, relative: str) -> str:
        """Where a task sees ``relative`` (a path inside its tree at ``workspace`` on the host).
        Default: the host's path; docker's tasks see their tree where it is mounted."""
        return str(workspace / relative)

    def gpu_problem(self, gpu_id: str) -> str | None:
        """Why this environment cannot hand GPU ``gpu_id`` to a task, or None: it can."""
        return None
