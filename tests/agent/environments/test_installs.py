"""The line of a failed install that says why: from uv's and pip's own output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from overnight.agent.environments.installs import find_uv, install_error
from tests.fixtures.wheels import broken_sdist

PIP_NO_MATCH = """\
Collecting torch==9.9
ERROR: Could not find a version that satisfies the requirement torch==9.9 (from versions: 2.0.0, 2.1.0)
ERROR: No matching distribution found for torch==9.9
"""
PIP_CONFLICT = """\
ERROR: Cannot install a==1.0 and b==2.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    a 1.0 depends on c==1
    b 2.0 depends on c==2

To fix this you could try to:
1. loosen the range of package versions you've specified

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""
PIP_BUILD = """\
Processing ./bad-1.0.tar.gz
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'error'
  error: subprocess-exited-with-error

  \u00d7 Getting requirements to build wheel did not run successfully.
  │ exit code: 1
  ╰─> [1 lines of output]
      bad needs CUDA 12 to build
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error

\u00d7 Getting requirements to build wheel did not run successfully.
│ exit code: 1
╰─> See above for output.

note: This error originates from a subprocess, and is likely not a problem with pip.
"""
UV_NO_SOLUTION = """\
Using Python 3.11.7 environment at: venv
error: No solution found when resolving dependencies
  cause: Because there is no version of torch==9.9 and you require torch==9.9, we can conclude that your requirements are unsatisfiable.
"""
UV_OLD_NO_SOLUTION = """\
  \u00d7 No solution found when resolving dependencies:
  ╰─▶ Because there is no version of torch==9.9 and you require torch==9.9, we can conclude that your requirements are unsatisfiable.
"""
UV_BUILD = """\
   Building bad @ file:///pkgs/bad-1.0.tar.gz
error: Failed to build `bad @ file:///pkgs/bad-1.0.tar.gz`
  cause: The build backend returned an error
  cause: Call to `backend.build_wheel` failed (exit status: 1)

         [stderr]
         Traceback (most recent call last):
           File "/root/.cache/uv/backend.py", line 4, in build_wheel
             import torch
         error: this line is the package's, not uv's
         ModuleNotFoundError: No module named 'torch'

hint: This error likely indicates that `bad` depends on `torch`, but doesn't declare it
"""
BECAUSE = (
    "Because there is no version of torch==9.9 and you require torch==9.9, we can conclude "
    "that your requirements are unsatisfiable."
)


@pytest.mark.parametrize(
    ("output", "said"),
    [
        (PIP_NO_MATCH, "No matching distribution found for torch==9.9"),
        (
            PIP_CONFLICT,
            "Cannot install a==1.0 and b==2.0 because these package versions have conflicting "
            "dependencies.",
        ),
        (PIP_BUILD, "building ./bad-1.0.tar.gz: bad needs CUDA 12 to build"),
        (UV_NO_SOLUTION, f"No solution found when resolving dependencies: {BECAUSE}"),
        (UV_OLD_NO_SOLUTION, f"No solution found when resolving dependencies: {BECAUSE}"),
        (
            UV_BUILD,
            "Failed to build `bad @ file:///pkgs/bad-1.0.tar.gz`: "
            "ModuleNotFoundError: No module named 'torch'",
        ),
        (
            "error: Failed to parse: `torch==`\n  cause: Expected a version\n",
            "Failed to parse: `torch==`: Expected a version",
        ),
        ("", "no output"),
        ("downloading\nconnection reset by peer\n", "connection reset by peer"),
    ],
)
def test_the_line_that_says_what_failed(output: str, said: str) -> None:
    assert install_error(output.splitlines()) == said


def test_a_long_cause_is_cut_to_one_short_line() -> None:
    text = install_error(["ERROR: No matching distribution found for " + "x" * 500])
    assert len(text) == 240 and text.endswith("…")


@pytest.mark.slow
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_real_failed_build_names_the_package_and_its_error(
    installer: str, tmp_path: Path
) -> None:
    sdist = tmp_path / "bad-1.0.tar.gz"
    sdist.write_bytes(broken_sdist("bad", fails="import torch_absent_here"))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(NO_COLOR="1", PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1")
    if installer == "uv":
        uv = find_uv()
        assert uv is not None
        subprocess.run([uv, "venv", "-q", str(venv)], check=True, env=env)
        command = [uv, "pip", "install", "--python", str(venv / "bin" / "python"), str(sdist)]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        command = [str(venv / "bin" / "pip"), "install", "--no-index", str(sdist)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert out.returncode != 0
    said = install_error((out.stdout + out.stderr).splitlines())
    assert "bad" in said.split(":")[0]  # the package it was building
    assert said.endswith("ModuleNotFoundError: No module named 'torch_absent_here'"), said
