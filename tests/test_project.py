"""The project's foundation: packaging, the test command and its settings, CI, the docs' map."""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cli import REPO_ROOT, subprocess_env
from tests.fixtures.fakenvml import FakeDriver, FakeGPU, FakeProcess
from tests.fixtures.services import docker_available

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TEST_COMMAND = "python3 -m pytest"
INSTALL = "bash .ci/install"
# The commands .ci/install looks for: the tests give it stand-ins that do nothing.
INSTALL_LOOKS_FOR = (
    "redis-server",
    "redis-sentinel",
    "git",
    "ssh",
    "sshd",
    "openssl",
    "gcc",
    "make",
    "chromium",
    "docker",
)


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


def _make(*targets: str) -> list[str]:
    """The commands ``make TARGETS`` would run, in order (``make -n``)."""
    proc = subprocess.run(
        ["make", "-n", "-C", str(REPO_ROOT), *targets],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in proc.stdout.splitlines() if not line.startswith("make")]


def test_make_test_installs_what_the_tests_need_then_runs_the_readmes_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"`{TEST_COMMAND}`" in readme and "`make test-fast`" in readme
    assert _make("test") == [INSTALL, TEST_COMMAND]
    assert _make("test-fast") == [INSTALL, f'{TEST_COMMAND} -m "not slow"']


def test_ci_installs_as_make_test_does_and_runs_its_command_after_lint_and_types() -> None:
    ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    steps = [f"{INSTALL} --docker", *_make("lint")[1:], TEST_COMMAND]
    assert steps[1:-1] == [
        "ruff check overnight tests bench examples",
        "ruff format --check overnight tests bench examples",
        "mypy",
    ]
    assert all(step in ci for step in steps), ci
    assert [ci.index(step) for step in steps] == sorted(ci.index(step) for step in steps)
    assert "pip install" not in "\n".join(ci)  # one way to install: .ci/install's


def test_mypy_checks_the_tests_too() -> None:
    assert _pyproject()["tool"]["mypy"]["packages"] == ["overnight", "tests"]


def _install_in(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of what .ci/install reads, and a PATH of shims: an apt-get that records its calls
    (and installs nothing), this python3, stand-ins for the system commands it looks for."""
    root = tmp_path / "checkout"
    (root / ".ci").mkdir(parents=True)
    for name in (".ci/install", ".ci/missing_requirements.py", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, root / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "apt.log"}\n')
    apt.chmod(0o755)
    python = bin_dir / "python3"  # a script, not a link: a venv's python must keep its venv
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    for name in INSTALL_LOOKS_FOR:
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")  # docker info: no engine answers
        (bin_dir / name).chmod(0o755)
    for tool in ("dirname", "id"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    return root, bin_dir


def _run_install(root: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(PATH=str(bin_dir), PIP_NO_INDEX="1")
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(root / ".ci" / "install"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_asked_for(tmp_path: Path, proc: subprocess.CompletedProcess[str], package: str) -> None:
    """install asked apt for ``package`` alone (as root) or told the user to (as anyone else)."""
    if os.geteuid() == 0:
        assert (tmp_path / "apt.log").read_text().splitlines() == [
            "update -q",
            f"install -y -q --no-install-recommends {package}",
        ]
        assert f"still missing after apt-get: {package}" in proc.stderr
    else:
        assert f"missing: {package}; install them (sudo apt-get install {package})" in proc.stderr


def test_install_with_everything_there_installs_nothing(tmp_path: Path) -> None:
    root, bin_dir = _install_in(tmp_path)
    proc = _run_install(root, bin_dir)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "apt.log").exists()
    assert "installing" not in proc.stderr and not (root / ".venv").exists(), proc.stderr
    assert "no Docker engine answers: the tests marked docker skip" in proc.stderr


@pytest.mark.parametrize("package", ["redis-server", "redis-sentinel"])
def test_install_asks_apt_for_a_missing_system_package(tmp_path: Path, package: str) -> None:
    root, bin_dir = _install_in(tmp_path)
    (bin_dir / package).unlink()
    proc = _run_install(root, bin_dir)
    assert proc.returncode == 1
    _assert_asked_for(tmp_path, proc, package)


def test_install_docker_wants_the_engine_not_just_a_docker_client(tmp_path: Path) -> None:
    # Seen on a machine: a docker CLI on PATH and no dockerd; docker.io must still be installed.
    root, bin_dir = _install_in(tmp_path)
    (bin_dir / "debootstrap").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "debootstrap").chmod(0o755)
    proc = _run_install(root, bin_dir, "--docker")
    assert proc.returncode == 1
    _assert_asked_for(tmp_path, proc, "docker.io")


def test_missing_requirements_names_the_absent_and_the_too_old() -> None:
    spec = importlib.util.spec_from_file_location(
        "missing_requirements", REPO_ROOT / ".ci" / "missing_requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pytest_version = importlib.metadata.version("pytest")
    assert module.missing(
        [
            "pytest>=8",
            "pytest>=999",
            "no-such-distribution-xyz",
            "no-such-distribution-xyz; python_version < '3'",
        ]
    ) == [f"pytest>=999 (found {pytest_version})", "no-such-distribution-xyz"]


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_machine_without_docker_skips_the_docker_tests_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check must not leave docker-py's socket behind for a later test to trip over.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert docker_available() is False
    gc.collect()
