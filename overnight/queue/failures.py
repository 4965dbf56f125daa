"""Failure kinds: whose fault a failed or lost task's end was, and which kinds are run again.

- ``setup``: the tree or the environment could not be made (a bad patch, a failed install);
- ``run``: the command's own exit (a non-zero code, a timeout);
- ``infra``: the machine, not the task (its agent lost, a full disk, a window's stop, an agent
  error);
- ``oom``: the host's OOM killer ended the run. Infrastructure too, but named apart for retries,
  since a run that outgrows the memory meets it again.

``--retries N`` runs a task again, up to N times, when it ends with a kind ``--retry-on`` names
(default ``infra``); ``MAX_RETRIES`` caps N.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from overnight.errors import UsageError


class FailureKind(str, enum.Enum):
    """Why a task failed, by whose fault."""

    SETUP = "setup"
    RUN = "run"
    INFRA = "infra"
    OOM = "oom"

    @property
    def label(self) -> str:
        return _TITLES[self]


_TITLES = {
    FailureKind.SETUP: "setup failure",
    FailureKind.RUN: "run failure",
    FailureKind.INFRA: "infrastructure failure",
    FailureKind.OOM: "infrastructure failure (OOM kill)",
}

DEFAULT_RETRY_ON: tuple[str, ...] = (FailureKind.INFRA.value,)
MAX_RETRIES = 10
"""The most times one task is run again: a retry loop must end."""


def parse_retry_on(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"infra,oom"`` (or its items) -> the kinds' values, each once; raises UsageError."""
    items = text.split(",") if isinstance(text, str) else [i for t in text for i in t.split(",")]
    kinds: list[str] = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item == "all":
            return tuple(k.value for k in FailureKind)
        try:
            kind = FailureKind(item).value
        except ValueError:
            names = ", ".join(k.value for k in FailureKind)
            raise UsageError(
                f"--retry-on names {item!r}, not a failure kind; use {names} or all "
                "(comma-separated)"
            ) from None
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise UsageError("--retry-on names no failure kind; use e.g. --retry-on infra,oom")
    return tuple(kinds)


_PHASE_KINDS = {
    "submit": FailureKind.SETUP,
    "workspace": FailureKind.SETUP,
    "environment": FailureKind.SETUP,
    "run": FailureKind.RUN,
}


def kind_of_phase(phase: str | None) -> FailureKind:
    """The kind of a failure in ``phase`` (a ``Phase`` value) that says nothing more: the tree
    and the environment are setup, the run is the command's, the agent's own is infrastructure."""
    return _PHASE_KINDS.get(phase or "", FailureKind.INFRA)


def check_retries(retries: int) -> None:
    """Refuse a retry count below 0 or above :data:`MAX_RETRIES`."""
    if not 0 <= retries <= MAX_RETRIES:
        raise UsageError(f"--retries must be 0 to {MAX_RETRIES}, not {retries}")


def retried(kind: FailureKind, retry_on: Iterable[str], attempt: int, retries: int) -> bool:
    """Whether a task that ended with ``kind`` on (0-based) ``attempt`` runs again."""
    return kind.value in retry_on and attempt < min(retries, MAX_RETRIES)
