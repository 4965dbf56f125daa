"""The page's files ship in the package, with their licences, and name nothing off this host."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.fixtures.cli import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

UI = REPO_ROOT / "overnight" / "ui"


def test_vendored_files_come_with_their_licences_and_versions() -> None:
    static = UI / "static"
    for name in ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css"):
        assert (static / name).stat().st_size > 1000, name
    assert "Zero-Clause BSD" in (static / "htmx.LICENSE").read_text()
    assert "MIT" in (static / "uPlot.LICENSE").read_text()
    table = (static / "VENDORED.md").read_text()
    assert "| htmx.org | 2.0.11 |" in table and "| uplot | 1.6.32 |" in table


def test_the_wheel_takes_the_templates_and_static_files() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["overnight.ui"]
    covered = {p for pattern in patterns for p in UI.glob(pattern)}
    files = {p for folder in ("static", "templates") for p in (UI / folder).iterdir()}
    assert files and files <= covered


def test_pages_load_nothing_from_another_host() -> None:
    for template in (UI / "templates").glob("*.html"):
        text = template.read_text()
        for link in re.findall(r'(?:src|href)="([^"{]+)"', text):
            assert link.startswith("/"), (template.name, link)
        for script in re.findall(r"<script([^>]*)>([^<]*)</script>", text):  # no inline JS
            assert 'type="application/json"' in script[0] or not script[1].strip(), template.name
    assert "http" not in Path(UI / "static" / "ui.js").read_text()
