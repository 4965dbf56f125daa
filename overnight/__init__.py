"""overnight: queue ML experiments from a laptop; GPU machines run them exactly as they were.

The names below are imported on first use, so ``import overnight`` (and the CLI) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overnight.api import Client, compare, enqueue, get, pull, snapshot
    from overnight.errors import OvernightError, OvernightWarning
    from overnight.queue.records import TaskRecord, TaskStatus
    from overnight.spec import Snapshot, TaskSpec

__all__ = [
    "Client",
    "OvernightError",
    "OvernightWarning",
    "Snapshot",
    "TaskRecord",
    "TaskSpec",
    "TaskStatus",
    "compare",
    "enqueue",
    "get",
    "pull",
    "snapshot",
]
__version__ = "0.1.0"

_HOMES = {
    "Client": "overnight.api",
    "TaskRecord": "overnight.queue.records",
    "TaskStatus": "overnight.queue.records",
    "compare": "overnight.api",
    "enqueue": "overnight.api",
    "get": "overnight.api",
    "pull": "overnight.api",
    "snapshot": "overnight.api",
    "OvernightError": "overnight.errors",
    "OvernightWarning": "overnight.errors",
    "Snapshot": "overnight.spec",
    "TaskSpec": "overnight.spec",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'overnight' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
