"""The files a command names, checked against what the worker will have: the recorded tree.

The worker rebuilds the repository elsewhere, without its ignored files, and runs the command in
the same folder of it. So a script that is not there fails every task of a sweep the next morning;
:func:`check_command` says so at enqueue (an error for the script, a warning for other files: an
absolute or ``~`` path, a path out of the repository, an ignored file).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from overnight.errors import MissingScriptError

_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?(\.exe)?$")
_PYTHON_VALUE_OPTS = frozenset({"-W", "-X", "--check-hash-based-pycs"})
_SHELLS = frozenset({"bash", "sh", "zsh", "dash"})
_SCRIPT_SUFFIXES = (".py", ".sh")
# Present on every machine: naming them is no mistake.
_SYSTEM = ("/dev/", "/proc/", "/sys/", "/tmp/", "/usr/", "/bin/", "/etc/")
_KEY_VALUE = re.compile(r"^[A-Za-z_+~][\w.+~-]*=")


def script_of(argv: Sequence[str]) -> str | None:
    """The script file ``argv`` runs, as written: ``train.py`` of ``python -u train.py``, ``run.sh``
    of ``bash run.sh``, ``./run.sh`` itself, or the first ``*.py`` argument of a launcher
    (``torchrun --nproc-per-node 2 train.py``); None for ``python -m``/``-c`` and the like."""
    if not argv:
        return None
    prog = os.path.basename(argv[0])
    if _PYTHON.match(prog) or prog in _SHELLS:
        i = 1
        while i < len(argv):
            token = argv[i]
            if token in ("-m", "-c", "-"):
                return None
            if token in _PYTHON_VALUE_OPTS:
                i += 2
            elif token.startswith("-"):
                i += 1
            else:
                return token
        return None
    if "/" in argv[0]:
        return argv[0]  # ./run.sh, scripts/train.py
    for token in argv[1:]:
        if token == "--":
            break
        if not token.startswith("-") and "=" not in token and token.endswith(_SCRIPT_SUFFIXES):
            return token
    return None


@dataclass(frozen=True)
class Workdir:
    """Where the command runs: ``cwd`` inside the repository whose top level is ``root``."""

    cwd: Path
    root: Path

    def inside(self, path: Path) -> str | None:
        """``path`` relative to the root, POSIX; None when it is outside the repository."""
        try:
            return Path(os.path.normpath(path)).relative_to(self.root).as_posix()
        except ValueError:
            return None


@dataclass(frozen=True)
class RecordedTree:
    """The paths of the recorded tree: its files, and its submodules (whose files are theirs)."""

    paths: frozenset[str]
    submodules: tuple[str, ...] = ()

    def has(self, rel: str) -> bool:
        """Whether the repo-relative file or folder ``rel`` is in the tree (a folder: a file of
        it is); a file on disk that is not is ignored by git."""
        if rel in self.paths or any(rel == s or rel.startswith(f"{s}/") for s in self.submodules):
            return True
        folder = f"{rel}/"
        return any(path.startswith(folder) for path in self.paths)


def script_path(argv: Sequence[str], where: Workdir) -> Path | None:
    """The file of the command's script in this repository, if it is one of its files: the
    script, or the module of ``python -m pkg.train`` (``pkg/train.py``, or the package's
    ``__main__.py``) when the working directory holds it."""
    script = script_of(argv)
    if script is None:
        module = _module_of(argv)
        if module is None:
            return None
        base = where.cwd.joinpath(*module.split("."))
        found = [p for p in (base.with_suffix(".py"), base / "__main__.py") if p.is_file()]
        return found[0] if found else None
    if script.startswith("~"):
        return None
    path = Path(os.path.normpath(where.cwd / script))
    return path if where.inside(path) is not None and path.is_file() else None


def _module_of(argv: Sequence[str]) -> str | None:
    if not argv or not _PYTHON.match(os.path.basename(argv[0])):
        return None
    for i, token in enumerate(argv[1:-1], start=1):
        if token == "-m":
            return argv[i + 1]
        if token == "-c" or not token.startswith("-"):
            return None
    return None


def check_command(argv: Sequence[str], where: Workdir, tree: RecordedTree) -> list[str]:
    """Warnings for the files ``argv`` names that the worker will not have; raises
    :class:`MissingScriptError` for a script that is not in the recorded tree."""
    script = script_of(argv)
    if script is not None:
        _check_script(script, where, tree)
    warnings: list[str] = []
    for token in argv[1:]:  # argv[0], the program, is the environment's (an interpreter)
        problem = _problem(_path_part(token), where, tree)
        if problem and problem not in warnings:
            warnings.append(problem)
    return warnings


def _path_part(token: str) -> str:
    """The part of an argument that may be a path: ``x`` of ``--data=x`` or ``data.dir=x``."""
    if token.startswith("-") and "=" in token:
        return token.split("=", 1)[1]
    if _KEY_VALUE.match(token):
        return token.split("=", 1)[1]
    return token


def _check_script(script: str, where: Workdir, tree: RecordedTree) -> None:
    if script.startswith(("~", "/")):
        return  # not the repository's: a warning below says so
    path = where.cwd / script
    rel = where.inside(path)
    if rel is None:
        return
    here = where.inside(where.cwd) or "."
    shown = "the repository root" if here == "." else f"{here}/"
    if not path.is_file():
        near = difflib.get_close_matches(path.name, _names(path.parent), n=1)
        folder = os.path.dirname(script)
        hint = f"did you mean {os.path.join(folder, near[0])}?" if near else "check the name"
        raise MissingScriptError(
            f"the command's script {script} does not exist in {shown} (where the command runs); "
            f"{hint}"
        )
    if not tree.has(rel):
        raise MissingScriptError(
            f"the command's script {rel} is ignored by git, so the worker will not have it; "
            "commit it, or take it out of .gitignore"
        )


def _names(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def _problem(value: str, where: Workdir, tree: RecordedTree) -> str | None:
    if not value or "://" in value or "\n" in value:
        return None
    if value.startswith("~"):
        return (
            f"the command names {value}: ~ is the home folder of whoever runs it, on the worker "
            "the agent's; name a path the worker has, or a file of the repository"
        )
    if value.startswith("/"):
        rel = where.inside(Path(value))
        if rel is not None:
            return (
                f"the command names {value}, an absolute path into this repository; the worker "
                f"rebuilds it elsewhere: name it {_relative_to_cwd(rel, where)}"
            )
        if value.startswith(_SYSTEM) or value in ("/", "/tmp"):
            return None
        return (
            f"the command names {value}, an absolute path: the worker must have it at the "
            "same place (a shared mount), or the task will not find it"
        )
    if ".." in value.split("/") and where.inside(where.cwd / value) is None:
        return (
            f"the command names {value}, outside the repository: the worker has only the "
            "repository's files"
        )
    path = where.cwd / value
    if not os.path.lexists(path):
        return None
    rel = where.inside(path)
    if rel is not None and rel != "." and not tree.has(rel):
        return (
            f"the command names {value}, which git ignores: it is not recorded, so the worker "
            "will not have it; commit it, or read it from a path the worker has"
        )
    return None


def _relative_to_cwd(rel: str, where: Workdir) -> str:
    return os.path.relpath(where.root / rel, where.cwd)
