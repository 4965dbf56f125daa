"""What a task's environment needs, as installable requirements.txt text, and where it came from.

Order: ``--requirements FILE``; else the first folder from the working directory up to the repo
root that declares something (``uv.lock``, then ``requirements.txt``, then ``pyproject.toml``
with ``[project].dependencies``); else a freeze of the command's interpreter, exact versions.
``uv.lock`` is exported to pinned lines without the project itself; ``-r`` includes in a
requirements file are inlined so the text stands alone. Every URL in the text (``--index-url``,
``--extra-index-url``, ``-f``, ``pkg @ git+https://...``) loses its credentials the way the remote's
does: the text is stored in Redis for anyone with queue access, and an index's credentials belong on
the agent (its pip/uv configuration or netrc).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from overnight.errors import RequirementsError
from overnight.recorder.interpreter import installed, normalize_name
from overnight.recorder.urls import strip_credentials
from overnight.spec import Requirements

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement)(?:\s*=\s*|\s+|(?=\S))(\S+)\s*$")
_NOT_FROZEN = frozenset({"pip", "overnight"})
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def without_credentials(text: str) -> str:
    """Requirements ``text`` with user info and token parameters removed from every URL."""
    return _URL.sub(lambda match: strip_credentials(match.group(0)), text)


def find_requirements(
    cwd: Path, root: Path, explicit: Path | None = None, *, python: str = sys.executable
) -> Requirements:
    """The requirements for a command run in ``cwd`` inside the repo at ``root``, without
    credentials."""
    found = _find(cwd, root, explicit, python)
    return dataclasses.replace(found, text=without_credentials(found.text))


def _find(cwd: Path, root: Path, explicit: Path | None, python: str) -> Requirements:
    if explicit is not None:
        path = explicit if explicit.is_absolute() else cwd / explicit
        if not path.is_file():
            raise RequirementsError(
                f"--requirements {explicit}: no such file; give the path of a requirements file"
            )
        reader = {"uv.lock": _uv_lock, "pyproject.toml": _pyproject}.get(path.name)
        if reader is not None:
            found = reader(path, root)
            if found is not None:
                return found
            raise RequirementsError(
                f"--requirements {explicit}: {path.name} declares no dependencies"
            )
        return Requirements("file", _requirements_txt(path), _relative(path, root))
    folder = cwd.resolve()
    root = root.resolve()
    while True:
        for name, reader in (
            ("uv.lock", _uv_lock),
            ("requirements.txt", _plain),
            ("pyproject.toml", _pyproject),
        ):
            path = folder / name
            if path.is_file():
                found = reader(path, root)
                if found is not None:
                    return found
        if folder == root or folder.parent == folder or root not in folder.parents:
            break
        folder = folder.parent
    return freeze(python)


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _plain(path: Path, root: Path) -> Requirements:
    return Requirements("requirements.txt", _requirements_txt(path), _relative(path, root))


def _requirements_txt(path: Path, seen: frozenset[Path] = frozenset()) -> str:
    """The file's text with ``-r other.txt`` includes replaced by their (inlined) text."""
    real = path.resolve()
    if real in seen:
        raise RequirementsError(f"requirements file {path} includes itself (through -r)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"cannot read requirements file {path}: {exc}") from exc
    out: list[str] = []
    for line in text.splitlines():
        match = _INCLUDE.match(line)
        if match:
            target = path.parent / match.group(1)
            if not target.is_file():
                raise RequirementsError(
                    f"{path}: included file {match.group(1)} does not exist; fix the -r line"
                )
            out.append(_requirements_txt(target, seen | {real}).rstrip("\n"))
        else:
            out.append(line)
    return "\n".join(out) + "\n" if out else ""


def _uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise RequirementsError(
                "the repo has a uv.lock but uv is not installed; pip install uv, "
                "or pass --requirements FILE"
            ) from None
        return found


def _uv_lock(path: Path, root: Path) -> Requirements:
    cmd = [
        _uv_binary(),
        "export",
        "--frozen",
        "--offline",
        "--no-hashes",
        "--no-header",
        "--no-annotate",
        "--no-emit-project",
        "--no-emit-workspace",
        "--format",
        "requirements.txt",
        "--quiet",
        "--no-progress",
        "--no-config",
    ]
    try:
        proc = subprocess.run(
            cmd, cwd=path.parent, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RequirementsError(f"uv export failed for {path}: {exc}") from exc
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), "no output")
        raise RequirementsError(
            f"uv export failed for {path}: {first.strip()}; fix the lock (uv lock) "
            "or pass --requirements FILE"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    text = "\n".join(lines) + "\n" if lines else ""
    return Requirements("uv.lock", text, _relative(path, root))


def _pyproject(path: Path, root: Path) -> Requirements | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RequirementsError(
            f"cannot read {path}: {exc}; fix it or pass --requirements FILE"
        ) from exc
    project = data.get("project")
    deps = project.get("dependencies") if isinstance(project, dict) else None
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        return None
    text = "".join(f"{d.strip()}\n" for d in deps if d.strip())
    return Requirements("pyproject.toml", text, _relative(path, root))


def freeze(python: str = sys.executable) -> Requirements:
    """``name==version`` for what ``python`` has installed; editable and local installs left out."""
    lines: list[str] = []
    for dist in installed(python):
        key = normalize_name(dist.name)
        if key in _NOT_FROZEN or not dist.version:
            continue
        line = _freeze_line(dist.name, dist.version, dist.direct_url)
        if line:
            lines.append(line)
    lines.sort(key=lambda ln: normalize_name(re.split(r"[ =@]", ln, maxsplit=1)[0]))
    if not lines:
        return Requirements("none")
    return Requirements("freeze", "".join(f"{ln}\n" for ln in lines))


def _freeze_line(name: str, version: str, direct_url: str | None) -> str | None:
    """One pinned line; None for an editable or local install, which no index can provide."""
    if not direct_url:
        return f"{name}=={version}"
    try:
        info = json.loads(direct_url)
    except ValueError:
        return f"{name}=={version}"
    url = str(info.get("url", ""))
    if url.startswith("file:") or info.get("dir_info", {}).get("editable"):
        return None
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        return f"{name} @ {vcs['vcs']}+{strip_credentials(url)}@{vcs['commit_id']}"
    return f"{name} @ {strip_credentials(url)}" if url else f"{name}=={version}"
