"""Who may use the page: hosts, the token beyond this machine, cross-site POSTs."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from overnight.errors import UiError
from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from overnight.ui.app import UiSettings, create_app
from overnight.ui.security import TOKEN_COOKIE, Access
from tests.fixtures.tasks import make_snapshot


def test_a_local_address_needs_no_token_and_any_other_refuses_without_one() -> None:
    assert Access.for_address("127.0.0.1", token=None).token is None
    assert Access.for_address("::1", token=None).token is None
    with pytest.raises(UiError, match=r"0\.0\.0\.0.*ui_token.*--generate-token"):
        Access.for_address("0.0.0.0", token=None)
    assert Access.for_address("0.0.0.0", token="s3cret").token == "s3cret"
    made = Access.for_address("10.0.0.5", token=None, generate=True).token
    assert made is not None and len(made) >= 24


def test_a_local_server_answers_only_to_local_host_names(client: TestClient) -> None:
    assert client.get("/runs").status_code == 200
    assert client.get("/runs", headers={"host": "localhost:8765"}).status_code == 200
    rebound = client.get("/runs", headers={"host": "evil.example:8765"})
    assert rebound.status_code == 421 and "127.0.0.1" in rebound.text


def test_a_post_from_another_site_is_refused(client: TestClient, store: TaskStore) -> None:
    task = submit_many(store, [Submission(make_snapshot(), TaskOptions())])[0]
    form = client.get(f"/runs/{task.id}/cancel").text
    found = re.search(r'name="csrf" value="([^"]+)"', form)
    assert found is not None
    refused = client.post(
        f"/runs/{task.id}/cancel",
        data={"csrf": found.group(1)},
        headers={"origin": "https://evil.example"},
    )
    assert refused.status_code == 403
    assert store.get(task.id).status is TaskStatus.QUEUED


def test_beyond_this_machine_the_token_is_asked_once_then_kept_in_a_cookie(
    store: TaskStore,
) -> None:
    access = Access.for_address("0.0.0.0", token="s3cret")
    app = create_app(UiSettings(store=store, access=access))
    with TestClient(app, base_url="http://box.lan:8765", follow_redirects=False) as client:
        assert client.get("/runs").status_code == 401
        assert client.get("/runs?token=wrong").status_code == 401
        given = client.get("/runs?token=s3cret&status=queued")
        assert given.status_code == 303
        assert given.headers["location"] == "/runs?status=queued"
        cookie = given.headers["set-cookie"]
        assert cookie.startswith(f"{TOKEN_COOKIE}=s3cret;") and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        page = client.get("/runs", headers={"cookie": f"{TOKEN_COOKIE}=s3cret"})
        assert page.status_code == 200 and "Runs" in page.text
