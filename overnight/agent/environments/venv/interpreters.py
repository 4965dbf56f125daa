"""Find the agent's Python interpreter that matches a task's recorded major.minor.

Candidates, first match wins: the agent's own interpreter, ``uv python find X.Y``,
``pythonX.Y`` on PATH, then pyenv's versions directory. Each candidate is run to confirm its
version (a pyenv shim for a version that is not selected exists on PATH but fails). With no
match the agent's own interpreter is used and :attr:`Interpreter.warning` says so.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3])"


@dataclasses.dataclass(frozen=True)
class Interpreter:
    """A Python interpreter on the agent."""

    path: str
    version: str  # major.minor.micro
    source: str  # "agent", "uv", "path", "pyenv" or "fallback"
    warning: str | None = None  # set when it does not match the recorded version

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def major_minor(version: str) -> str | None:
    """``"3.11"`` for ``"3.11.7"`` or ``"3.11"``; None when ``version`` is not a version."""
    match = _VERSION.match(version.strip())
    return f"{match.group(1)}.{match.group(2)}" if match else None


def probe(python: str, environ: Mapping[str, str] | None = None) -> str | None:
    """major.minor.micro of the interpreter at ``python``, or None when it does not run."""
    version = _output([python, "-I", "-c", _PROBE], environ)
    return version if version is not None and _VERSION.match(version) else None


def _output(argv: list[str], environ: Mapping[str, str] | None) -> str | None:
    """The stripped stdout of a command that succeeded, else None."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(environ) if environ is not None else None,
            cwd=tempfile.gettempdir(),  # away from any project's .python-version or .venv
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def find_interpreter(
    recorded: str,
    *,
    uv_bin: str | None = None,
    environ: Mapping[str, str] | None = None,
    own: str = sys.executable,
    usable: Callable[[str], bool] = lambda path: True,
) -> Interpreter:
    """The interpreter to build a task's venv with; see the module docstring for the order.

    ``environ`` supplies PATH, PYENV_ROOT and HOME (default: this process's environment).
    Candidates ``usable`` refuses (one a task user may not run) are passed over.
    """
    env = dict(os.environ if environ is None else environ)
    own_version = "{}.{}.{}".format(*sys.version_info[:3]) if own == sys.executable else None
    own_version = own_version or probe(own, env) or "unknown"
    wanted = major_minor(recorded)
    if wanted is None:
        return Interpreter(
            own,
            own_version,
            "fallback",
            f"recorded Python version {recorded!r} is not major.minor; using {own_version} ({own})",
        )
    if major_minor(own_version) == wanted and usable(own):
        return Interpreter(own, own_version, "agent")
    for source, path in _candidates(wanted, uv_bin, env):
        version = probe(path, env) if usable(path) else None
        if version is not None and major_minor(version) == wanted:
            return Interpreter(path, version, source)
    return Interpreter(
        own,
        own_version,
        "fallback",
        f"recorded Python {wanted} not found on this agent (looked with uv, on PATH and in "
        f"pyenv); using {own_version} ({own}); install Python {wanted} on the agent to match",
    )


def _candidates(wanted: str, uv_bin: str | None, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    if uv_bin:
        found = _uv_find(uv_bin, wanted, env)
        if found:
            yield "uv", found
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        # every match, not just the first: an earlier one may be a shim that fails
        on_path = shutil.which(f"python{wanted}", path=folder) if folder else None
        if on_path:
            yield "path", on_path
    for path in _pyenv_pythons(wanted, env):
        yield "pyenv", path


def _uv_find(uv_bin: str, wanted: str, env: dict[str, str]) -> str | None:
    uv_env = {**env, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    out = _output([uv_bin, "python", "find", wanted], uv_env)
    return out.splitlines()[-1].strip() if out else None


def _pyenv_pythons(wanted: str, env: dict[str, str]) -> list[str]:
    """pyenv's X.Y.Z installs of ``wanted``, newest micro first."""
    root = env.get("PYENV_ROOT") or str(Path(env.get("HOME", str(Path.home()))) / ".pyenv")
    versions = Path(root) / "versions"
    if not versions.is_dir():
        return []
    found: list[tuple[int, str]] = []
    for entry in versions.iterdir():
        match = re.fullmatch(re.escape(wanted) + r"\.(\d+)", entry.name)
        python = entry / "bin" / f"python{wanted}"
        if match and python.exists():
            found.append((int(match.group(1)), str(python)))
    return [path for _, path in sorted(found, reverse=True)]
