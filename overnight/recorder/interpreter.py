"""The Python a recorded command runs with: its version and what is installed in it.

``python train.py`` runs the ``python`` on the user's PATH (often a venv), not necessarily the one
running overnight, so that interpreter is asked directly. Commands that are not a Python
interpreter (``torchrun``, ``bash run.sh``) fall back to a console script's shebang, then to the
interpreter running overnight.

An interpreter the command names by a path or a version (``.venv/bin/python``,
``/home/me/.venv/bin/python``, ``~/miniconda3/envs/x/bin/python``, ``python3.11``) is this
machine's: on an agent the first is not there (ignored files do not travel) and the second
would bypass the task's environment. :func:`environment_argv` records such a command with
``python``, the interpreter of the environment the agent builds for the task.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)*)?(\.exe)?$")

_QUERY = r"""
import json, os, sys
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]
out = {"version": "%d.%d.%d" % tuple(sys.version_info[:3]), "dists": []}
if sys.argv[-1] == "--dists":
    import importlib.metadata as md
    dists = list(md.distributions())
    rows = out["dists"]
    for d in dists:
        try:
            direct = d.read_text("direct_url.json")
        except Exception:
            direct = None
        meta = d.metadata
        rows.append([meta["Name"] or "", d.version or "", direct,
                     meta.get_all("Requires-Dist") or [], []])
    if any((r[0] or "").lower() == "overnight" for r in rows):  # its dependencies: see freeze
        for d, row in zip(dists, rows):
            try:
                row[4] = (d.read_text("top_level.txt") or "").split()
            except Exception:
                pass
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Distribution:
    """One installed distribution: its name, version, PEP 610 ``direct_url.json`` if any, its
    ``Requires-Dist`` lines and, where overnight is installed beside it, the top-level modules
    it provides (``top_level.txt``: empty when the build tool wrote none)."""

    name: str
    version: str
    direct_url: str | None = None
    requires: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()


_ENVIRONMENT_PYTHONS = ("python", "python3")
"""Interpreter names every task environment (venv or image) has on its PATH."""


def find_python(argv: Sequence[str], cwd: Path, environ: Mapping[str, str]) -> str:
    """Path of the interpreter ``argv`` runs, or of the one running overnight."""
    if argv:
        prog = os.path.expanduser(argv[0])
        found = (
            str(cwd / prog)
            if os.sep in prog and not os.path.isabs(prog)
            else shutil.which(prog, path=environ.get("PATH", os.defpath))
        )
        if found and os.access(found, os.X_OK):
            if _PYTHON_NAME.match(os.path.basename(prog)):
                return found
            shebang = _shebang_python(Path(found))
            if shebang:
                return shebang
    return sys.executable


def environment_argv(argv: Sequence[str], version: str) -> tuple[tuple[str, ...], str | None]:
    """``argv`` as agents run it, and the line that says what changed (None: nothing did).

    A Python interpreter named by a path or by a version becomes ``python``: the interpreter of
    the task's environment, which agents build for Python ``version`` (the recorded one).
    """
    prog = argv[0] if argv else ""
    name = prog.replace("\\", "/").rsplit("/", 1)[-1]
    if not _PYTHON_NAME.match(name) or prog in _ENVIRONMENT_PYTHONS:
        return tuple(argv), None
    notice = (
        f"the command's interpreter {prog} is this machine's: recorded as python, which on "
        f"agents runs the task's own environment (Python {version}, built from its requirements)"
    )
    return ("python", *argv[1:]), notice


def _shebang_python(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            first = fh.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if not words:
        return None
    target = words[1] if os.path.basename(words[0]) == "env" and len(words) > 1 else words[0]
    if not _PYTHON_NAME.match(os.path.basename(target)):
        return None
    return target if os.path.isabs(target) else shutil.which(target)


def _query(python: str, dists: bool) -> dict[str, object] | None:
    args = [python, "-c", _QUERY] + (["--dists"] if dists else [])
    try:
        proc = subprocess.run(args, capture_output=True, timeout=60, check=False)
        data = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return data if isinstance(data, dict) else None


def python_version(python: str) -> str:
    """major.minor.micro of ``python``; that of the running interpreter if it cannot be asked."""
    if not _is_running(python):
        data = _query(python, dists=False)
        if data and isinstance(data.get("version"), str):
            return str(data["version"])
    return "{}.{}.{}".format(*sys.version_info[:3])


def _is_running(python: str) -> bool:
    """Whether ``python`` is the interpreter running overnight: the same file (a venv's
    ``python`` links to its base's), so asking it would only tell the version known here."""
    try:
        return python == sys.executable or os.path.samefile(python, sys.executable)
    except OSError:
        return False


def installed(python: str) -> list[Distribution]:
    """The distributions importable by ``python``, the first one of each name (as imports see it)."""
    data = _query(python, dists=True)
    if data is None and python != sys.executable:
        data = _query(sys.executable, dists=True)
    rows = data.get("dists", []) if data else []
    out: list[Distribution] = []
    seen: set[str] = set()
    for row in rows if isinstance(rows, list) else []:
        name, version, direct, requires, imports = (*row, [], [])[:5]
        key = normalize_name(str(name))
        if key and key not in seen:
            seen.add(key)
            found = Distribution(str(name), str(version), direct)
            out.append(replace(found, requires=_strs(requires), imports=_strs(imports)))
    return out


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def normalize_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()
