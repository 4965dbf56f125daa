from __future__ import annotations

import sys
from pathlib import Path

import pytest

from overnight.recorder import interpreter
from overnight.recorder.interpreter import python_version

RUNNING = "{}.{}.{}".format(*sys.version_info[:3])


def _asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The interpreters asked for their version from now on (each one a subprocess)."""
    asked: list[str] = []
    query = interpreter._query

    def counted(python: str, dists: bool) -> dict[str, object] | None:
        asked.append(python)
        return query(python, dists)

    monkeypatch.setattr(interpreter, "_query", counted)
    return asked


def test_the_running_interpreter_is_not_asked_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _asked(monkeypatch)
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(sys.executable)  # as a venv's python links to its base interpreter
    assert python_version(str(link)) == RUNNING
    assert asked == []
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    assert python_version(str(wrapper)) == RUNNING
    assert asked == [str(wrapper)]
