"""What a long step of a task's preparation (a fetch, a build, a wait for a lock) is handed: where
it reports progress, and how it learns that it should stop."""

from __future__ import annotations

from collections.abc import Callable

ProgressLine = Callable[[str], None]
"""Where a step writes progress lines (they end up in the task's log)."""

StopCheck = Callable[[], bool]
"""Polled during long steps; True means the task was canceled or is being stopped: stop soon."""
