"""examples/screenshots.py remakes the README's pictures of ``overnight ui``."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.browser import CHROMIUM
from tests.fixtures.cli import REPO_ROOT, subprocess_env
from tests.fixtures.services import missing_service

pytestmark = pytest.mark.slow


def test_the_script_photographs_the_runs_run_and_compare_pages(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        missing_service("redis-server is not installed (apt-get install redis-server)")
    if not CHROMIUM.exists():
        missing_service(f"{CHROMIUM} is missing (apt-get install chromium)")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "screenshots.py"), "--out", str(tmp_path)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("runs.png", "run.png", "compare.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])
        assert width == 1400 and height >= 1000, (name, width, height)
    # the README shows the pictures the script makes
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"docs/screenshots/{n}" in readme for n in ("runs.png", "run.png", "compare.png"))
