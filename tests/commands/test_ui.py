"""``overnight ui`` as a user starts it: a real server, the refusals, the missing extra."""

from __future__ import annotations

import urllib.request

import pytest

from overnight.commands import ui
from overnight.errors import ExitCode
from tests.fixtures.cli import run_cli
from tests.fixtures.tasks import invoke
from tests.fixtures.uiserver import UiServer

pytestmark = pytest.mark.slow


def test_it_serves_the_runs_page_on_127_0_0_1(ui_server: UiServer) -> None:
    with urllib.request.urlopen(f"{ui_server.url}/runs", timeout=10) as response:
        page = response.read().decode()
        assert response.headers["x-frame-options"] == "DENY"
    assert "<h1>Runs</h1>" in page and "no tasks yet" in page
    with urllib.request.urlopen(f"{ui_server.url}/static/htmx.min.js", timeout=10) as response:
        assert b"htmx" in response.read(200)


def test_it_refuses_another_address_without_a_token(redis_url: str) -> None:
    result = run_cli("ui", "--host", "0.0.0.0", "--port", "1", OVERNIGHT_REDIS_URL=redis_url)
    assert result.returncode == ExitCode.USAGE
    assert "without a token" in result.stderr and "--generate-token" in result.stderr


def test_without_its_extra_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setattr(ui, "EXTRA", ("starlette", "overnight_no_such_module"))
    monkeypatch.setenv("OVERNIGHT_REDIS_URL", redis_url)
    result = invoke("ui")
    assert result.exit_code == ExitCode.USAGE
    assert "pip install 'overnight[ui]'" in result.output
    assert "missing: overnight_no_such_module" in result.output
