"""The project's foundation: packaging, the test command and its settings, CI, the docs' map."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.cli import REPO_ROOT, subprocess_env
from tests.fixtures.fakenvml import FakeDriver, FakeGPU, FakeProcess

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TEST_COMMAND = "python3 -m pytest"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_package_script_and_python_version() -> None:
    project = _pyproject()["project"]
    assert project["name"] == "overnight"
    assert project["scripts"] == {"overnight": "overnight.cli:main"}
    assert project["requires-python"] == ">=3.10"
    assert {"pytest-timeout", "hypothesis", "mypy", "ruff"} <= {
        re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0]
        for dep in project["optional-dependencies"]["test"]
    }


def test_pytest_is_strict_with_a_per_test_timeout() -> None:
    options = _pyproject()["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split()
    assert 0 < int(options["timeout"]) <= 300
    assert options["filterwarnings"][0] == "error"
    assert _pyproject()["tool"]["mypy"]["strict"] is True


def test_ci_runs_the_readmes_test_command_after_lint_and_types() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"`{TEST_COMMAND}`" in readme
    assert f"\t{TEST_COMMAND}\n" in (REPO_ROOT / "Makefile").read_text()  # make test
    ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith("python3 -m pip install") and "'.[test]'" in line for line in ci)
    steps = ["ruff check overnight tests bench examples", "mypy", TEST_COMMAND]
    assert all(step in ci for step in steps)
    assert [ci.index(step) for step in steps] == sorted(ci.index(step) for step in steps)
    assert "ruff format --check overnight tests bench examples" in ci


def test_developers_map_names_every_subpackage() -> None:
    text = (REPO_ROOT / "DEVELOPERS.md").read_text()
    package = REPO_ROOT / "overnight"
    for init in package.rglob("__init__.py"):
        folder = init.parent.relative_to(package).as_posix()
        if folder != ".":
            assert f"{folder.rsplit('/', 1)[-1]}/" in text, folder


FAILING_PROPERTY = """
from hypothesis import given, strategies as st

@given(st.integers())
def test_fails(x):
    assert x < 10
"""


def test_a_failing_hypothesis_test_shows_its_example(tmp_path: Path) -> None:
    # Hypothesis imports libcst to print the failure as a patch; a warning raised there would
    # end the run in an INTERNALERROR with no falsifying example.
    test = tmp_path / "test_throwaway.py"
    test.write_text(FAILING_PROPERTY)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO_ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(test),
        ],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "INTERNALERROR" not in out
    # hypothesis 6.16x says "Failing test case", earlier ones "Falsifying example"
    assert re.search(r"(Falsifying example|Failing test case): test_fails\(", out), out
    assert "x=10" in out


def test_the_real_gpu_checks_pass_over_the_fake_driver(fake_driver: FakeDriver) -> None:
    # They run for real only where a GPU is lent, on scarce minutes: the script must be right.
    fake_driver.set([FakeGPU(used_mb=2048, util_pct=30), FakeGPU()], [FakeProcess(0, 100, 2048)])
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / ".ci" / "gpu-check")],
        env=subprocess_env(**fake_driver.env()),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert '"driver_version": "550.54.15", "cuda_version": "12.4"' in out, out
    assert re.search(r"\b2 passed\b", out) and not re.search(r"\d+ skipped", out), out
    assert "gpu-check: passed\n" in out, out
