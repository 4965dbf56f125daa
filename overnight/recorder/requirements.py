"""What a task's environment needs, as installable requirements.txt text, and where it came from.

Order: ``--requirements FILE``; else the nearest folder, from the script's (the working directory
when the command names none of the repository's) up to the repo root, holding a project file that
declares something (per folder: ``uv.lock``, ``poetry.lock``, ``Pipfile.lock``,
``requirements.txt``, ``environment.yml``, ``pyproject.toml``: :mod:`.projectfiles` reads them);
else a freeze of the command's interpreter, exact versions, said so in a note. Every URL in the
text (``--index-url``, ``--extra-index-url``, ``-f``, ``pkg @ git+https://...``) loses its
credentials the way the remote's does: the text is stored in Redis for anyone with queue access,
and an index's credentials belong on the agent (its pip/uv configuration or netrc)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from overnight.errors import RequirementsError
from overnight.recorder.imports import imported_modules
from overnight.recorder.interpreter import Distribution, installed, normalize_name
from overnight.recorder.projectfiles import READERS, Declared, read_requirements_txt
from overnight.recorder.urls import strip_credentials
from overnight.spec import Requirements

_NOT_FROZEN = frozenset({"pip", "overnight"})
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"\bextra\s*==")  # a requirement of an extra, which nothing asked for
_BY_NAME = {name: (source, reader) for name, source, reader in READERS}


@dataclass(frozen=True)
class FoundRequirements:
    """The requirements to record, and what the user should know of them (one line each: conda
    packages an ``environment.yml`` lists, local installs left out, a freeze taken)."""

    requirements: Requirements
    notes: tuple[str, ...] = ()


def without_credentials(text: str) -> str:
    """Requirements ``text`` with user info and token parameters removed from every URL."""
    return _URL.sub(lambda match: strip_credentials(match.group(0)), text)


def find_requirements(
    cwd: Path,
    root: Path,
    explicit: Path | None = None,
    *,
    python: str = sys.executable,
    start: Path | None = None,
    script: Path | None = None,
) -> FoundRequirements:
    """The requirements for a command run in ``cwd`` inside the repo at ``root``, without
    credentials: ``explicit`` (relative to ``cwd``), else the nearest project file from ``start``
    (the script's folder; default ``cwd``) up to ``root``, else a freeze of ``python`` that keeps
    of overnight's own dependencies those ``script`` imports."""
    found = _find(cwd, root, explicit, python, start or cwd, script)
    reqs = found.requirements
    text = without_credentials(reqs.text)
    return FoundRequirements(Requirements(reqs.source, text, reqs.path), found.notes)


def _find(
    cwd: Path, root: Path, explicit: Path | None, python: str, start: Path, script: Path | None
) -> FoundRequirements:
    if explicit is not None:
        path = explicit if explicit.is_absolute() else cwd / explicit
        if not path.is_file():
            raise RequirementsError(
                f"--requirements {explicit}: no such file; give the path of a requirements file"
            )
        source, reader = _BY_NAME.get(path.name, ("file", read_requirements_txt))
        declared = reader(path)
        if declared is None:
            raise RequirementsError(
                f"--requirements {explicit}: {path.name} declares no dependencies"
            )
        return _found("file" if source == "requirements.txt" else source, declared, path, root)
    folder = start.resolve()
    root = root.resolve()
    while True:
        for name, source, reader in READERS:
            path = folder / name
            if path.is_file():
                declared = reader(path)
                if declared is not None:
                    return _found(source, declared, path, root)
        if folder == root or folder.parent == folder or root not in folder.parents:
            break
        folder = folder.parent
    return freeze(python, script=script, cwd=cwd, searched=_relative(start, root) or ".")


def _found(source: str, declared: Declared, path: Path, root: Path) -> FoundRequirements:
    return FoundRequirements(
        Requirements(source, declared.text, _relative(path, root)), declared.notes
    )


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def freeze(
    python: str = sys.executable,
    *,
    script: Path | None = None,
    cwd: Path | None = None,
    searched: str = ".",
) -> FoundRequirements:
    """``name==version`` for what ``python`` has installed, editable and local installs left out
    (a note names them). Where overnight is installed there too, its own dependencies are left
    out unless ``script`` (or the repository's modules it imports, found beside it or in
    ``cwd``) imports them or another installed package needs them: they are there for
    overnight, not for the task."""
    dists = installed(python)
    dropped = _overnight_only(dists, script, cwd)
    lines: list[str] = []
    local: list[str] = []
    for dist in dists:
        key = normalize_name(dist.name)
        if key in _NOT_FROZEN or key in dropped or not dist.version:
            continue
        line = _freeze_line(dist.name, dist.version, dist.direct_url)
        if line:
            lines.append(line)
        else:
            local.append(dist.name)
    lines.sort(key=lambda ln: normalize_name(re.split(r"[ =@]", ln, maxsplit=1)[0]))
    where = "the repository root" if searched == "." else f"{searched}/ up to the repository root"
    left = f", {len(dropped)} of overnight's own dependencies left out" if dropped else ""
    notes = [
        f"no requirements file from {where} (requirements.txt, pyproject.toml, uv.lock, "
        f"poetry.lock, Pipfile.lock, environment.yml): recorded a freeze of {python} "
        f"({len(lines)} packages{left}); add a requirements.txt to choose"
    ]
    if local:
        notes.append(
            f"the freeze leaves out {', '.join(sorted(local, key=str.lower))}: installed from "
            "local paths, they will not install on the worker; make them part of the "
            "repository, or publish them"
        )
    if not lines:
        return FoundRequirements(Requirements("none"), tuple(notes))
    return FoundRequirements(
        Requirements("freeze", "".join(f"{ln}\n" for ln in lines)), tuple(notes)
    )


def _overnight_only(dists: list[Distribution], script: Path | None, cwd: Path | None) -> set[str]:
    """The distributions installed only for overnight's sake: those its requirements reach and
    that neither ``script``'s imports nor any other distribution need."""
    by_key = {normalize_name(d.name): d for d in dists}
    if "overnight" not in by_key:
        return set()
    ours = _closure({"overnight"}, by_key)
    imported: set[str] = set()
    if script is not None and script.is_file():
        modules = imported_modules(script, [script.parent, *([cwd] if cwd else [])])
        for key, dist in by_key.items():
            provides = dist.imports or (key.replace("-", "_"),)
            if modules & set(provides):
                imported.add(key)
    keep = _closure((set(by_key) - ours) | imported, by_key)
    return ours - keep - {"overnight"}


def _closure(roots: set[str], by_key: dict[str, Distribution]) -> set[str]:
    seen: set[str] = set()
    todo = [r for r in roots if r in by_key]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        for line in by_key[key].requires:
            match = _NAME.match(line)
            if match and not _EXTRA.search(line):
                dep = normalize_name(match.group(1))
                if dep in by_key:
                    todo.append(dep)
    return seen


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
