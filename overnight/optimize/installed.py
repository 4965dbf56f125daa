"""Whether Optuna is installed: ``optimize`` says so in one line, naming the extra to install."""

from __future__ import annotations

import importlib.util

from overnight.errors import OptunaMissing


def optuna_installed() -> bool:
    return importlib.util.find_spec("optuna") is not None


def require_optuna() -> None:
    """Raise :class:`OptunaMissing`, naming the extra, where Optuna is not installed."""
    if not optuna_installed():
        raise OptunaMissing(
            "overnight optimize needs Optuna, which is not installed here; install the "
            "extra: pip install 'overnight[optimize]'"
        )
