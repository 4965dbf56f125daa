"""The top-level modules a script imports, following the repository's own modules it imports.

Read from the source (``ast``), nothing is run: a freeze uses it to keep the packages the script
needs among those that are only there for overnight itself.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

_MAX_FILES = 500  # a bound on what one enqueue reads, whatever the repository's size


def imported_modules(script: Path, search: Sequence[Path]) -> set[str]:
    """Top-level names imported by ``script`` and by the local modules (found under a folder of
    ``search``) that it imports, directly or through each other."""
    found: set[str] = set()
    done: set[Path] = set()
    todo = [script]
    while todo and len(done) < _MAX_FILES:
        path = todo.pop()
        if path in done:
            continue
        done.add(path)
        for name in _imports(path):
            found.add(name)
            todo += _local(name, search)
    return found


def _imports(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _local(name: str, search: Sequence[Path]) -> list[Path]:
    for folder in search:
        module = folder / f"{name}.py"
        if module.is_file():
            return [module]
        package = folder / name
        if (package / "__init__.py").is_file():
            return sorted(package.rglob("*.py"))[:_MAX_FILES]
    return []
