"""Readers of the files a project declares its requirements in, each to requirements.txt text.

``requirements.txt`` (its ``-r`` includes inlined), ``uv.lock`` (``uv export``), ``poetry.lock``
(the main group's pins), ``Pipfile.lock`` (its default packages), ``environment.yml`` (its
``pip:`` part: conda packages cannot be installed by pip, and a note names them) and
``pyproject.toml`` (``[project].dependencies``, else ``[tool.poetry.dependencies]``). A reader
returns None when the file declares nothing, so the search goes on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overnight.errors import RequirementsError
from overnight.recorder.interpreter import normalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement)(?:\s*=\s*|\s+|(?=\S))(\S+)\s*$")
_PYPI = ("https://pypi.org/simple", "https://pypi.python.org/simple")
_NOT_CONDA = frozenset({"python", "pip"})  # in every environment.yml, and not missed


@dataclass(frozen=True)
class Declared:
    """What a project file declares, as requirements.txt text, and what could not be kept."""

    text: str
    notes: tuple[str, ...] = ()


Reader = Callable[[Path], "Declared | None"]


def lines(items: list[str]) -> str:
    return "".join(f"{item}\n" for item in items)


def requirements_txt(path: Path, seen: frozenset[Path] = frozenset()) -> str:
    """The file's text with ``-r other.txt`` includes replaced by their (inlined) text."""
    real = path.resolve()
    if real in seen:
        raise RequirementsError(f"requirements file {path} includes itself (through -r)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"cannot read requirements file {path}: {exc}") from exc
    return _inline(text.splitlines(), path, seen | {real})


def _inline(items: list[str], path: Path, seen: frozenset[Path]) -> str:
    out: list[str] = []
    for line in items:
        match = _INCLUDE.match(line)
        if match:
            target = path.parent / match.group(1)
            if not target.is_file():
                raise RequirementsError(
                    f"{path}: included file {match.group(1)} does not exist; fix the -r line"
                )
            out.append(requirements_txt(target, seen).rstrip("\n"))
        else:
            out.append(line)
    return "\n".join(out) + "\n" if out else ""


def read_requirements_txt(path: Path) -> Declared:
    return Declared(requirements_txt(path))


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


def read_uv_lock(path: Path) -> Declared:
    cmd = [
        _uv_binary(), "export", "--frozen", "--offline", "--no-hashes", "--no-header",
        "--no-annotate", "--no-emit-project", "--no-emit-workspace", "--format",
        "requirements.txt", "--quiet", "--no-progress", "--no-config",
    ]  # fmt: skip
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
    return Declared(lines([ln for ln in proc.stdout.splitlines() if ln.strip() and ln[0] != "#"]))


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RequirementsError(
            f"cannot read {path}: {exc}; fix it or pass --requirements FILE"
        ) from exc


def read_pyproject(path: Path) -> Declared | None:
    data = _toml(path)
    project = data.get("project")
    deps = project.get("dependencies") if isinstance(project, dict) else None
    if isinstance(deps, list) and all(isinstance(d, str) for d in deps):
        return Declared(lines([d.strip() for d in deps if d.strip()]))
    poetry = _poetry_dependencies(data)
    if poetry is None:
        return None
    out: list[str] = []
    local: list[str] = []
    for name, spec in poetry.items():
        line = _poetry_line(name, spec)
        if line is _LOCAL:
            local.append(name)
        elif line:
            out.append(line)
    return Declared(lines(out), _local_note(path.name, local))


def _poetry_dependencies(data: Mapping[str, Any]) -> dict[str, Any] | None:
    tool = data.get("tool")
    poetry = tool.get("poetry") if isinstance(tool, dict) else None
    deps = poetry.get("dependencies") if isinstance(poetry, dict) else None
    if not isinstance(deps, dict):
        return None
    return {k: v for k, v in deps.items() if normalize_name(k) != "python"}


_LOCAL = "<local>"


def _poetry_line(name: str, spec: Any) -> str | None:
    """One requirement for a ``[tool.poetry.dependencies]`` entry; :data:`_LOCAL` for a path
    dependency, None for an optional one (an extra)."""
    if isinstance(spec, list):  # per-Python alternatives: the first stands for all
        spec = spec[0] if spec else "*"
    if isinstance(spec, str):
        return name + poetry_constraint(spec)
    if not isinstance(spec, dict) or spec.get("optional") is True:
        return None
    if "path" in spec:
        return _LOCAL
    extras = spec.get("extras")
    head = name + (f"[{','.join(extras)}]" if isinstance(extras, list) and extras else "")
    if "git" in spec:
        ref = spec.get("rev") or spec.get("tag") or spec.get("branch")
        body = f"{head} @ git+{spec['git']}" + (f"@{ref}" if ref else "")
    elif "url" in spec:
        body = f"{head} @ {spec['url']}"
    else:
        body = head + poetry_constraint(str(spec.get("version", "*")))
    markers = [str(spec["markers"])] if spec.get("markers") else []
    if spec.get("python"):
        markers += [f"python_version {c}" for c in _python_markers(str(spec["python"]))]
    return body + (f"; {' and '.join(markers)}" if markers else "")


def _python_markers(constraint: str) -> list[str]:
    spec = poetry_constraint(constraint)
    return [
        f"{m.group(1)} '{m.group(2)}'" for m in re.finditer(r"(==|!=|>=|<=|>|<|~=)([^,]+)", spec)
    ]


def poetry_constraint(constraint: str) -> str:
    """A Poetry version constraint as PEP 440: ``^1.2`` is ``>=1.2,<2.0``, ``~1.2`` is
    ``>=1.2,<1.3``, a bare ``1.2.3`` is ``==1.2.3``, ``*`` is nothing."""
    parts = [p.strip() for p in re.split(r",|\s+(?=[<>=!^~])", constraint) if p.strip()]
    out: list[str] = []
    for part in parts:
        if part == "*":
            continue
        if part.startswith("^"):
            out += _caret(part[1:].strip())
        elif part.startswith("~") and not part.startswith("~="):
            out += _tilde(part[1:].strip())
        elif part[0].isdigit():
            out.append(f"=={part}")
        else:
            out.append(part.replace(" ", ""))
    return ",".join(out)


def _numbers(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version.split("-")[0])[:3]] or [0]


def _caret(version: str) -> list[str]:
    nums = _numbers(version)
    first = next((i for i, n in enumerate(nums) if n != 0), len(nums) - 1)
    upper = [*nums[:first], nums[first] + 1]
    return [
        f">={version}",
        f"<{'.'.join(map(str, upper + [0] * (max(len(nums), 2) - len(upper))))}",
    ]


def _tilde(version: str) -> list[str]:
    nums = _numbers(version)
    upper = [nums[0] + 1] if len(nums) == 1 else [nums[0], nums[1] + 1]
    return [
        f">={version}",
        f"<{'.'.join(map(str, upper + [0] * (max(len(nums), 2) - len(upper))))}",
    ]


def read_poetry_lock(path: Path) -> Declared | None:
    """The pins of ``poetry.lock`` that the project's main dependencies need: the ``main`` group
    (Poetry 2) or category (Poetry 1.4 and older), else the packages reached from the
    ``[tool.poetry.dependencies]`` (or ``[project].dependencies``) of the pyproject beside it."""
    packages = [p for p in _toml(path).get("package", []) if isinstance(p, dict) and "name" in p]
    if not packages:
        return None
    wanted = _main_packages(packages, path.parent / "pyproject.toml")
    out: list[str] = []
    indexes: list[str] = []
    local: list[str] = []
    for package in packages:
        if normalize_name(str(package["name"])) not in wanted:
            continue
        raw = package.get("source")
        source: dict[str, Any] = raw if isinstance(raw, dict) else {}
        kind, url = source.get("type"), source.get("url")
        name, version = str(package["name"]), str(package.get("version", ""))
        if kind in ("directory", "file"):
            local.append(name)
            continue
        if kind == "git":
            ref = source.get("resolved_reference") or source.get("reference")
            line = f"{name} @ git+{url}" + (f"@{ref}" if ref else "")
        elif kind == "url":
            line = f"{name} @ {url}"
        else:
            line = f"{name}=={version}"
            if kind == "legacy" and url and url not in indexes:
                indexes.append(url)
        markers = package.get("markers")
        out.append(line + (f"; {markers}" if isinstance(markers, str) and markers else ""))
    head = [f"--extra-index-url {url}" for url in indexes]
    return Declared(lines(head + sorted(out, key=str.lower)), _local_note(path.name, local))


def _main_packages(packages: list[dict[str, Any]], pyproject: Path) -> set[str]:
    names = {normalize_name(str(p["name"])) for p in packages}
    grouped = [p for p in packages if "groups" in p or "category" in p]
    if grouped:
        return {
            normalize_name(str(p["name"]))
            for p in grouped
            if "main" in (p.get("groups") or []) or p.get("category") == "main"
        }
    if not pyproject.is_file():
        return names
    data = _toml(pyproject)
    roots = {normalize_name(k) for k, v in (_poetry_dependencies(data) or {}).items()
             if not (isinstance(v, dict) and v.get("optional") is True)}  # fmt: skip
    project = data.get("project")
    for dep in project.get("dependencies", []) if isinstance(project, dict) else []:
        match = re.match(r"\s*([A-Za-z0-9._-]+)", str(dep))
        if match:
            roots.add(normalize_name(match.group(1)))
    edges = {
        normalize_name(str(p["name"])): {
            normalize_name(k)
            for k, v in (p.get("dependencies") or {}).items()
            if not (isinstance(v, dict) and v.get("optional") is True)
        }
        for p in packages
    }
    seen: set[str] = set()
    todo = [r for r in roots if r in names]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [d for d in edges.get(name, ()) if d in names]
    return seen


def read_pipfile_lock(path: Path) -> Declared | None:
    """``Pipfile.lock``'s default packages, pinned, after its sources as index options."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RequirementsError(f"cannot read {path}: {exc}; fix it (pipenv lock)") from exc
    default = data.get("default") if isinstance(data, dict) else None
    if not isinstance(default, dict):
        return None
    meta = data.get("_meta")
    sources = meta.get("sources", []) if isinstance(meta, dict) else []
    urls = [str(s["url"]) for s in sources if isinstance(s, dict) and s.get("url")]
    head = [] if not urls or urls[0].rstrip("/") in _PYPI else [f"--index-url {urls[0]}"]
    head += [f"--extra-index-url {u}" for u in urls[1:] if u.rstrip("/") not in _PYPI]
    out: list[str] = []
    local: list[str] = []
    for name, entry in sorted(default.items()):
        if not isinstance(entry, dict):
            continue
        extras = entry.get("extras")
        full = name + (f"[{','.join(extras)}]" if isinstance(extras, list) and extras else "")
        if "path" in entry:
            local.append(name)
            continue
        if "git" in entry:
            ref = entry.get("ref")
            line = f"{full} @ git+{entry['git']}" + (f"@{ref}" if ref else "")
        elif "file" in entry:
            line = f"{full} @ {entry['file']}"
        else:
            line = full + str(entry.get("version", "")).replace("*", "")
        markers = entry.get("markers")
        out.append(line + (f"; {markers}" if markers else ""))
    return Declared(lines(head + out), _local_note(path.name, local))


def read_environment_yml(path: Path) -> Declared | None:
    """``environment.yml``'s ``pip:`` list; a note names the conda packages left out."""
    import yaml  # only for a project that has one: enqueue starts faster without it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RequirementsError(
            f"cannot read {path}: {exc}; fix it or pass --requirements FILE"
        ) from exc
    deps = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(deps, list):
        return None
    pip: list[str] = []
    conda: list[str] = []
    for dep in deps:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            pip += [str(item) for item in dep["pip"]]
        elif isinstance(dep, str):
            name = re.split(r"[=<>!~\s\[]", dep.split("::")[-1], maxsplit=1)[0]
            if name and normalize_name(name) not in _NOT_CONDA:
                conda.append(name)
    notes: tuple[str, ...] = ()
    if conda:
        notes = (
            f"{path.name}: its conda packages {', '.join(conda)} will not be installed (the "
            "worker installs only its pip: part); list them under pip:, or pass --requirements",
        )
    return Declared(_inline(pip, path, frozenset({path.resolve()})), notes)


def _local_note(file: str, names: list[str]) -> tuple[str, ...]:
    if not names:
        return ()
    return (
        f"{file}: {', '.join(names)} left out (installed from local paths, which will not "
        "install on the worker); make them part of the repository's tree, or publish them",
    )


READERS: tuple[tuple[str, str, Reader], ...] = (
    ("uv.lock", "uv.lock", read_uv_lock),
    ("poetry.lock", "poetry.lock", read_poetry_lock),
    ("Pipfile.lock", "Pipfile.lock", read_pipfile_lock),
    ("requirements.txt", "requirements.txt", read_requirements_txt),
    ("environment.yml", "environment.yml", read_environment_yml),
    ("environment.yaml", "environment.yml", read_environment_yml),
    ("pyproject.toml", "pyproject.toml", read_pyproject),
)
"""(file name, the source it is recorded as, reader), nearest-first within one folder."""
