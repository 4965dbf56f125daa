from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from overnight.queue.store import TaskStore
from overnight.ui.app import UiSettings, create_app
from overnight.ui.security import Access
from tests.fixtures.browser import browser, page
from tests.fixtures.tasks import redis_client, store
from tests.fixtures.uiserver import ui_server

__all__ = ["browser", "page", "redis_client", "store", "ui_server"]

LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def access() -> Access:
    return Access("127.0.0.1")


@pytest.fixture
def client(store: TaskStore, access: Access) -> Iterator[TestClient]:
    """The page's server over the test's Redis, asked as a browser on this machine would."""
    app = create_app(UiSettings(store=store, access=access))
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as test_client:
        yield test_client
