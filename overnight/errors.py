"""Every error overnight raises derives from :class:`OvernightError`.

Sub-roots group errors by area; the CLI maps each sub-root to a named exit code
(:class:`ExitCode`, below; :mod:`overnight.cli` prints them). Messages name the cause and what to do about it.
What the CLI prints as a warning, the Python API issues as an :class:`OvernightWarning`.
"""

from __future__ import annotations

import enum


class OvernightError(Exception):
    """Raised for any failure overnight knows how to explain to a user."""


class ConfigError(OvernightError):
    """Raised when configuration (flags, ``OVERNIGHT_*`` variables, YAML file) is invalid."""


class UsageError(OvernightError):
    """Raised when command-line input is malformed (a bad sweep, duration or id)."""


class UiError(UsageError):
    """Raised when ``overnight ui`` cannot start: its extra is missing, or it would listen beyond
    this machine without a token."""


class NotifyTargetError(UsageError):
    """Raised when a ``notify`` target is not a webhook URL, an ``ntfy+`` URL or a mailto:."""


class DigestScheduleError(UsageError):
    """Raised when a ``digest`` setting is not a day and a time such as ``mon 07:00``."""


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


class SecretFileError(SnapshotError):
    """Raised when an untracked file named like a key or credentials file would be recorded."""


class NoCommitError(SnapshotError):
    """Raised when the repository being snapshotted has no commit yet."""


class EmptyCommandError(SnapshotError):
    """Raised when the command to record is empty."""


class EnvVarError(SnapshotError):
    """Raised when an ``--env`` entry is malformed or names a variable that is not set."""


class OutputGlobError(SnapshotError):
    """Raised when an ``--outputs`` glob could name files outside the working tree."""


class MetricFileError(SnapshotError):
    """Raised when an ``--metrics`` path could name a file outside the working tree."""


class MissingScriptError(SnapshotError):
    """Raised when the script a command runs is not in the recorded tree (missing or ignored)."""


class RequirementsError(SnapshotError):
    """Raised when the requirements cannot be read (a missing file, a failing ``uv export``)."""


class ReconstructError(OvernightError):
    """Raised when a recorded working tree cannot be rebuilt on an agent."""


class LocalRepoError(ReconstructError):
    """Raised when a repo or submodule URL is not a network URL and allow_local_repos is off."""


class GitError(OvernightError):
    """Raised when a git command fails; the recorder and agent turn it into an error naming the cause."""

    def __init__(self, message: str, *, returncode: int = 1, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr

    @property
    def reason(self) -> str:
        """git's first error line (``fatal: ...``, ``error: ...``), or the message."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        for i, line in enumerate(lines):
            if line.startswith(("fatal:", "error:")):
                text = line.split(":", 1)[1].strip()
                if text.startswith("Could not read from remote") and i > 0:
                    return lines[i - 1]  # what ssh said ("Permission denied (publickey)")
                return text
        return lines[0] if lines else str(self)


class QueueError(OvernightError):
    """Raised for failures of the Redis-backed task store and queues."""


class ConnectionFailed(QueueError):
    """Raised when Redis cannot be reached."""


class TaskNotFound(QueueError):
    """Raised when no task matches an id or id prefix."""


class AmbiguousTaskId(QueueError):
    """Raised when an id prefix matches more than one task."""


class SweepNotFound(QueueError):
    """Raised when no sweep matches a sweep id, id prefix or the id of one of its tasks."""


class CorruptRecord(QueueError):
    """Raised when a record in Redis cannot be decoded or validated."""


class InvalidTransition(QueueError):
    """Raised when a task cannot move to the requested status from the one it is in."""


class UnknownQueue(QueueError):
    """Raised when a command names a queue that no task has ever been enqueued on."""


class WaitTimeout(QueueError):
    """Raised when tasks waited for have not ended within the time given."""


class OutputError(OvernightError):
    """Raised when a task's output files cannot be stored, listed or pulled."""


class OutputChanged(OutputError):
    """Raised when a file changed while it was stored: its bytes no longer hash to its digest."""


class OutputStoreDown(OutputError):
    """Raised when an output store cannot be reached: down, unmounted, or its connection lost."""


class AgentError(OvernightError):
    """Raised for failures inside an agent while preparing or running a task."""


class EnvironmentBuildError(AgentError):
    """Raised when a task's environment (venv or Docker image) cannot be built."""


class InstallError(EnvironmentBuildError):
    """Raised when a task's requirements fail to install: the spec's fault, which a retry of
    the same spec meets again."""


class TaskRunError(AgentError):
    """Raised when a task's process cannot be started or supervised."""


class GPUError(AgentError):
    """Raised when GPUs cannot be discovered or assigned."""


class LockTimeout(AgentError):
    """Raised when a file lock shared between agents is not free within its timeout."""


class PreparationCanceled(AgentError):
    """Raised when a task is canceled while its tree or environment is being prepared."""


class OptimizeError(OvernightError):
    """Raised when an ``overnight optimize`` study cannot be set up, driven or read."""


class OptunaMissing(OptimizeError):
    """Raised when ``overnight optimize`` runs where Optuna is not installed."""


class MetricNeverReported(OptimizeError):
    """Raised when a study's first trials all ended without the metric it optimizes."""


class StudyNotFound(OptimizeError):
    """Raised when no ``overnight optimize`` study has the name given."""


class DeliveryFailed(AgentError):
    """Raised when a notification cannot be delivered (the webhook or SMTP server refused it)."""


class OvernightWarning(UserWarning):
    """Issued by the Python API where the CLI prints ``overnight: warning:``: a file the command
    names that the worker will not have, a requirements freeze taken, a local-path package."""


class ExitCode(enum.IntEnum):
    """Exit codes of the ``overnight`` command, one per error area."""

    OK = 0
    FAILURE = 1  # generic failure, or a waited-for task that did not finish
    USAGE = 2  # click's own code for bad usage
    CONFIG = 3
    SNAPSHOT = 4
    QUEUE = 5
    NOT_FOUND = 6
    CONNECTION = 7
    AGENT = 8
    SPEC = 9
    RECONSTRUCT = 10
    OUTPUT = 11
    OPTIMIZE = 12


_CODES: list[tuple[type[OvernightError], ExitCode]] = [
    (ConnectionFailed, ExitCode.CONNECTION),
    (TaskNotFound, ExitCode.NOT_FOUND),
    (SweepNotFound, ExitCode.NOT_FOUND),
    (QueueError, ExitCode.QUEUE),
    (ConfigError, ExitCode.CONFIG),
    (UsageError, ExitCode.USAGE),
    (SpecError, ExitCode.SPEC),
    (SnapshotError, ExitCode.SNAPSHOT),
    (ReconstructError, ExitCode.RECONSTRUCT),
    (AgentError, ExitCode.AGENT),
    (OutputError, ExitCode.OUTPUT),
    (OptimizeError, ExitCode.OPTIMIZE),
]


def exit_code_for(exc: OvernightError) -> ExitCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return ExitCode.FAILURE
