"""Print what of pyproject's dependencies and test extras this Python lacks, one a line.

`.ci/install` runs it to decide whether pip has anything to do: a second run then costs a second,
not a pip resolve (nor a network). Exits 1 when something is missing, 0 when nothing is.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

try:  # pip vendors packaging, which reads requirements and their markers
    from pip._vendor.packaging.requirements import Requirement
except ImportError:  # pragma: no cover - exercised only where pip is absent
    try:
        from packaging.requirements import Requirement
    except ImportError:
        print("pip (no pip, nor packaging to read requirements with)")
        sys.exit(1)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:
        print("tomli")
        sys.exit(1)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def missing(requirements: list[str]) -> list[str]:
    """The requirements not installed, or installed at a version they exclude."""
    lacking = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            lacking.append(line)
            continue
        if not req.specifier.contains(version, prereleases=True):
            lacking.append(f"{line} (found {version})")
    return lacking


def main() -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lacking = missing(project["dependencies"] + project["optional-dependencies"]["test"])
    for line in lacking:
        print(line)
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())
