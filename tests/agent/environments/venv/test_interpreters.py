from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from overnight.agent.environments.venv.interpreters import find_interpreter, major_minor, probe

OWN = "{}.{}.{}".format(*sys.version_info[:3])
OWN_MM = "{}.{}".format(*sys.version_info[:2])


def fake_python(path: Path, version: str | None) -> Path:
    """An executable that answers the version probe like a Python would (or fails like a shim)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"echo {version}" if version else "echo 'pyenv: python: command not found' >&2; exit 127"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def env_with(tmp_path: Path, path_dirs: list[Path]) -> dict[str, str]:
    return {
        "PATH": os.pathsep.join(str(d) for d in path_dirs),
        "HOME": str(tmp_path / "home"),
        "PYENV_ROOT": str(tmp_path / "pyenv"),
    }


@pytest.mark.parametrize(
    ("text", "mm"), [("3.11.7", "3.11"), ("3.12", "3.12"), (" 3.10.1+ ", "3.10"), ("abc", None)]
)
def test_major_minor(text: str, mm: str | None) -> None:
    assert major_minor(text) == mm


def test_probe_reads_the_version_and_rejects_what_does_not_run(tmp_path: Path) -> None:
    assert probe(sys.executable) == OWN
    assert probe(str(fake_python(tmp_path / "shim", None))) is None
    assert probe(str(tmp_path / "missing")) is None


def test_the_agents_own_interpreter_serves_its_own_version(tmp_path: Path) -> None:
    found = find_interpreter(OWN_MM + ".0", environ=env_with(tmp_path, []))
    assert (found.path, found.version, found.source, found.warning) == (
        sys.executable,
        OWN,
        "agent",
        None,
    )


def test_python_x_y_on_path_is_found_and_a_broken_shim_is_skipped(tmp_path: Path) -> None:
    broken = tmp_path / "shims"
    good = tmp_path / "bin"
    fake_python(broken / "python3.99", None)
    fake_python(good / "python3.99", "3.99.4")
    found = find_interpreter("3.99.1", environ=env_with(tmp_path, [broken, good]))
    assert (found.path, found.version, found.source) == (str(good / "python3.99"), "3.99.4", "path")
    assert found.major_minor == "3.99" and found.warning is None


def test_pyenv_versions_are_searched_newest_micro_first(tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    fake_python(shims / "python3.98", None)  # like pyenv's shim for an unselected version
    for micro in ("1", "12", "3"):
        fake_python(
            tmp_path / "pyenv" / "versions" / f"3.98.{micro}" / "bin" / "python3.98",
            f"3.98.{micro}",
        )
    fake_python(tmp_path / "pyenv" / "versions" / "3.98-dev" / "bin" / "python3.98", "3.98.99")
    found = find_interpreter("3.98", environ=env_with(tmp_path, [shims]))
    assert (found.version, found.source) == ("3.98.12", "pyenv")


def test_uv_python_find_is_asked_first(tmp_path: Path) -> None:
    # Our own interpreter, linked as python3.X on PATH, pretending the agent runs another one.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / f"python{OWN_MM}").symlink_to(sys.executable)
    own = fake_python(tmp_path / "agent-python", "3.97.0")
    from uv import find_uv_bin

    found = find_interpreter(
        OWN, uv_bin=str(find_uv_bin()), environ=env_with(tmp_path, [bindir]), own=str(own)
    )
    assert (found.version, found.source, found.warning) == (OWN, "uv", None)


def test_no_match_falls_back_to_the_agents_interpreter_with_a_warning(tmp_path: Path) -> None:
    found = find_interpreter("3.96.2", environ=env_with(tmp_path, []))
    assert (found.path, found.version, found.source) == (sys.executable, OWN, "fallback")
    assert found.warning is not None
    assert "recorded Python 3.96 not found" in found.warning and OWN in found.warning


def test_an_unreadable_recorded_version_falls_back_with_a_warning(tmp_path: Path) -> None:
    found = find_interpreter("unknown", environ=env_with(tmp_path, []))
    assert found.source == "fallback" and found.warning is not None and "'unknown'" in found.warning
