from __future__ import annotations

import json
from pathlib import Path

import pytest

from overnight.errors import RequirementsError
from overnight.recorder.projectfiles import (
    poetry_constraint,
    read_environment_yml,
    read_pipfile_lock,
    read_poetry_lock,
    read_pyproject,
)
from tests.fixtures.gitrepo import write_file

POETRY_PYPROJECT = """\
[tool.poetry]
name = "exp"
version = "0.1.0"

[tool.poetry.dependencies]
python = "^3.10"
numpy = "^1.26"
requests = { version = "~2.31", extras = ["socks"] }
tools = { path = "../tools", develop = true }
plot = { version = "*", optional = true }
lib = { git = "https://github.com/org/lib.git", tag = "v1.2" }

[tool.poetry.group.dev.dependencies]
pytest = "^8"
"""

# Poetry 1.5-1.8 (lock format 2.0): no groups, no category; main is what the project reaches.
POETRY_LOCK_2_0 = """\
[[package]]
name = "numpy"
version = "1.26.4"
optional = false

[[package]]
name = "requests"
version = "2.31.0"
optional = false

[package.dependencies]
idna = ">=2.5,<4"
PySocks = { version = ">=1.5.6", optional = true }

[[package]]
name = "idna"
version = "3.7"
optional = false

[[package]]
name = "pysocks"
version = "1.7.1"
optional = true

[[package]]
name = "pytest"
version = "8.2.0"
optional = false

[package.dependencies]
pluggy = ">=1.5"

[[package]]
name = "pluggy"
version = "1.5.0"
optional = false

[[package]]
name = "tools"
version = "0.1.0"
optional = false

[package.source]
type = "directory"
url = "../tools"

[[package]]
name = "lib"
version = "1.2.0"
optional = false

[package.source]
type = "git"
url = "https://github.com/org/lib.git"
reference = "v1.2"
resolved_reference = "0123456789abcdef0123456789abcdef01234567"
"""

POETRY_LOCK_GROUPS = """\
[[package]]
name = "torch"
version = "2.3.0"
groups = ["main"]
markers = "sys_platform == \\"linux\\""

[package.source]
type = "legacy"
url = "https://download.pytorch.org/whl/cu121"
reference = "torch-cu121"

[[package]]
name = "ruff"
version = "0.5.0"
groups = ["dev"]

[[package]]
name = "six"
version = "1.16.0"
category = "main"
"""


def test_poetry_lock_without_groups_keeps_what_the_main_dependencies_reach(tmp_path: Path) -> None:
    write_file(tmp_path, "pyproject.toml", POETRY_PYPROJECT)
    declared = read_poetry_lock(write_file(tmp_path, "poetry.lock", POETRY_LOCK_2_0))
    assert declared is not None
    assert declared.text.splitlines() == [
        "idna==3.7",
        "lib @ git+https://github.com/org/lib.git@0123456789abcdef0123456789abcdef01234567",
        "numpy==1.26.4",
        "requests==2.31.0",
    ]  # not pytest/pluggy (dev), not pysocks (an optional extra), not tools (a local path)
    [note] = declared.notes
    assert note.startswith("poetry.lock: tools left out (installed from local paths")


def test_poetry_lock_groups_markers_and_private_indexes(tmp_path: Path) -> None:
    declared = read_poetry_lock(write_file(tmp_path, "poetry.lock", POETRY_LOCK_GROUPS))
    assert declared is not None
    assert declared.text.splitlines() == [
        "--extra-index-url https://download.pytorch.org/whl/cu121",
        "six==1.16.0",
        'torch==2.3.0; sys_platform == "linux"',
    ]
    assert declared.notes == ()


def test_tool_poetry_dependencies_without_a_lock(tmp_path: Path) -> None:
    declared = read_pyproject(write_file(tmp_path, "pyproject.toml", POETRY_PYPROJECT))
    assert declared is not None
    assert declared.text.splitlines() == [
        "numpy>=1.26,<2.0",
        "requests[socks]>=2.31,<2.32",
        "lib @ git+https://github.com/org/lib.git@v1.2",
    ]
    assert "tools left out" in declared.notes[0]


@pytest.mark.parametrize(
    ("poetry", "pep440"),
    [
        ("^1.2.3", ">=1.2.3,<2.0.0"),
        ("^0.2.3", ">=0.2.3,<0.3.0"),
        ("^0.0.3", ">=0.0.3,<0.0.4"),
        ("^2", ">=2,<3.0"),
        ("~1.2.3", ">=1.2.3,<1.3.0"),
        ("~1", ">=1,<2.0"),
        ("~=1.4", "~=1.4"),
        ("1.2.3", "==1.2.3"),
        ("*", ""),
        (">=1.0,<3", ">=1.0,<3"),
        (">= 1.0 < 3", ">=1.0,<3"),
    ],
)
def test_poetry_constraints_become_pep_440(poetry: str, pep440: str) -> None:
    assert poetry_constraint(poetry) == pep440


def test_pipfile_lock_default_packages_and_sources(tmp_path: Path) -> None:
    lock = {
        "_meta": {
            "sources": [
                {"name": "lab", "url": "https://pypi.lab.example/simple", "verify_ssl": True},
                {"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True},
            ]
        },
        "default": {
            "numpy": {"hashes": ["sha256:00"], "version": "==1.26.4", "index": "lab"},
            "requests": {
                "extras": ["socks"],
                "version": "==2.31.0",
                "markers": "python_version >= '3.8'",
            },
            "lib": {"git": "https://github.com/org/lib.git", "ref": "abc123"},
            "mine": {"editable": True, "path": "."},
        },
        "develop": {"pytest": {"version": "==8.2.0"}},
    }
    declared = read_pipfile_lock(write_file(tmp_path, "Pipfile.lock", json.dumps(lock)))
    assert declared is not None
    assert declared.text.splitlines() == [
        "--index-url https://pypi.lab.example/simple",
        "lib @ git+https://github.com/org/lib.git@abc123",
        "numpy==1.26.4",
        "requests[socks]==2.31.0; python_version >= '3.8'",
    ]
    assert declared.notes[0].startswith("Pipfile.lock: mine left out")
    with pytest.raises(RequirementsError, match=r"cannot read .*Pipfile\.lock: .*pipenv lock"):
        read_pipfile_lock(write_file(tmp_path, "Pipfile.lock", "{not json"))


def test_environment_yml_keeps_its_pip_part_and_names_conda_packages(tmp_path: Path) -> None:
    write_file(tmp_path, "env/base.txt", "six==1.16.0\n")
    env = write_file(
        tmp_path,
        "env/environment.yml",
        "name: exp\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n"
        "  - conda-forge::numpy=1.26\n  - cudatoolkit>=11.8\n"
        "  - pip:\n    - torch==2.3.0\n    - -r base.txt\n",
    )
    declared = read_environment_yml(env)
    assert declared is not None
    assert declared.text == "torch==2.3.0\nsix==1.16.0\n"
    [note] = declared.notes
    assert note.startswith(
        "environment.yml: its conda packages numpy, cudatoolkit will not be installed"
    )
    broken = write_file(tmp_path, "environment.yml", "dependencies: [unclosed\n")
    with pytest.raises(RequirementsError, match=r"cannot read .*environment\.yml"):
        read_environment_yml(broken)
