"""Every error overnight raises derives from :class:`OvernightError`.

Sub-roots group errors by area; the CLI maps each sub-root to a named exit code
(see :mod:`overnight.cli`). Messages name the cause and what to do about it.
"""

from __future__ import annotations


class OvernightError(Exception):
    """Raised for any failure overnight knows how to explain to a user."""


class ConfigError(OvernightError):
    """Raised when configuration (flags, ``OVERNIGHT_*`` variables, YAML file) is invalid."""


class UsageError(OvernightError):
    """Raised when command-line input is malformed (a bad sweep, duration or id)."""


class SpecError(OvernightError):
    """Raised when a task spec cannot be read: malformed JSON, missing fields, newer schema."""


class SnapshotError(OvernightError):
    """Raised when a working tree cannot be snapshotted."""


class NotAGitRepoError(SnapshotError):
    """Raised when the directory being snapshotted is not inside a git repository."""


class SnapshotTooLargeError(SnapshotError):
    """Raised when the patch, bundle or an untracked file exceeds its size limit."""


class SecretEnvError(SnapshotError):
    """Raised when a recorded environment variable looks like a secret and was not allowed."""


class ReconstructError(OvernightError):
    """Raised when a recorded working tree cannot be rebuilt on an agent."""


class QueueError(OvernightError):
    """Raised for failures of the Redis-backed task store and queues."""


class ConnectionFailed(QueueError):
    """Raised when Redis cannot be reached."""


class TaskNotFound(QueueError):
    """Raised when no task matches an id or id prefix."""


class AmbiguousTaskId(QueueError):
    """Raised when an id prefix matches more than one task."""


class CorruptRecord(QueueError):
    """Raised when a record in Redis cannot be decoded or validated."""


class AgentError(OvernightError):
    """Raised for failures inside an agent while preparing or running a task."""


class EnvironmentBuildError(AgentError):
    """Raised when a task's environment (venv or Docker image) cannot be built."""


class TaskRunError(AgentError):
    """Raised when a task's process cannot be started or supervised."""


class GPUError(AgentError):
    """Raised when GPUs cannot be discovered or assigned."""
