"""Installing requirements, as venv and docker environments both do: with uv, and read back.

Both kinds install with uv: venvs with the agent's, images with the image's own or else the
agent's binary copied into the install container (:func:`find_uv`). When an install fails,
:func:`install_error` picks from the installer's output (uv's or pip's) the line that says what
failed, instead of its boilerplate ("note: This error originates from a subprocess"):

- a package's own build output (pip's ``[N lines of output]`` block, uv's ``[stderr]``), by
  its exception line or else its last line, after the package it built;
- pip's last ``ERROR:`` line that is not a pointer to its docs (``No matching distribution
  found for torch==9.9``);
- uv's ``error:`` with its last ``cause:`` (``No solution found when resolving dependencies:
  Because there is no version of torch==9.9 ...``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

from overnight.agent.run.failures import MAX_CHARS, error_line
from overnight.errors import EnvironmentBuildError

TAIL_LINES = 80  # lines of the end of an installer's output kept to find its error in

_BLOCK_START = re.compile(r"(?:\[\d+ lines? of output\]|^\[(?:stderr|stdout)\])$")
_BLOCK_END = re.compile(
    r"^(?:\s*\[end of output\]|(?:hint|help|note|error|warning):)"
)  # unindented
_PIP_TARGET = re.compile(r"^(?:Collecting|Processing|Building wheel for|Obtaining) (\S+)")
_UV_ERROR = re.compile(r"^(?:error:|\u00d7)\s*(.*)")  # uv's error line (a times sign before uv 0.5)
_UV_BUILD = re.compile(r"^(?:error:|\u00d7)\s*(Failed to (?:download and )?build .*)")
_UV_CAUSE = re.compile(r"^(?:cause:|[╰├]─▶)\s*(.*)")
_PIP_ERROR = re.compile(r"^ERROR: (.*)")
_PIP_POINTER = re.compile(r"ResolutionImpossible: for help|^To fix this you could try")


def find_uv() -> str | None:
    """The agent's uv binary (the ``uv`` package's, else the one on PATH), or None."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def require_uv() -> str:
    """The agent's uv binary; raises when it has none."""
    found = find_uv()
    if found is None:
        raise EnvironmentBuildError(
            "uv is not installed on this agent; install it with `pip install uv`"
        )
    return found


def install_error(lines: Sequence[str]) -> str:
    """What failed, in one line, from the end of a failed install's output (``"no output"``)."""
    kept = [line.rstrip() for line in lines if line.strip()]
    text = _build_output(kept) or _pip_error(kept) or _uv_error(kept) or _last(kept)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 1] + "…"
    return text


def _build_output(lines: list[str]) -> str | None:
    """A package build's own error: the last build output block, after what was built."""
    starts = [i for i, line in enumerate(lines) if _BLOCK_START.search(line.strip())]
    if not starts:
        return None
    start = starts[-1]
    block: list[str] = []
    for line in lines[start + 1 :]:
        if _BLOCK_END.match(line):
            break
        block.append(line)
    said = error_line(block)
    if said is None:
        return None
    what = _built(lines[:start])
    return f"{what}: {said[0]}" if what else said[0]


def _built(before: list[str]) -> str | None:
    """The package the build was of: uv's ``Failed to build `x```, pip's last ``Collecting x``."""
    for line in reversed(before):
        text = line.strip()
        uv_build = _UV_BUILD.match(text)
        if uv_build:
            return uv_build.group(1).rstrip(":")
        pip_target = _PIP_TARGET.match(text)
        if pip_target:
            return f"building {pip_target.group(1)}"
    return None


def _pip_error(lines: list[str]) -> str | None:
    errors = [m.group(1) for m in map(_PIP_ERROR.match, lines) if m]
    useful = [text for text in errors if not _PIP_POINTER.search(text)]
    return (useful or errors or [None])[-1]


def _uv_error(lines: list[str]) -> str | None:
    for index in range(len(lines) - 1, -1, -1):
        found = _UV_ERROR.match(lines[index].strip())
        if found is None:
            continue
        causes = [m.group(1) for m in (_UV_CAUSE.match(t.strip()) for t in lines[index:]) if m]
        error = found.group(1).rstrip(":")
        return f"{error}: {causes[-1]}" if causes and error else error or None
    return None


def _last(lines: list[str]) -> str:
    said = error_line(lines)
    return said[0] if said is not None else "no output"
