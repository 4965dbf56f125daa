"""The project's pytest settings: failures stay readable under ``filterwarnings = error``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.cli import REPO_ROOT, subprocess_env

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
    assert "Falsifying example: test_fails(" in out
    assert "x=10" in out
