"""What the page shows in a real browser (Debian's chromium), served by ``overnight ui`` from a
subprocess over real tasks in Redis: live statuses, a log growing, hostile text, actions,
compare."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from overnight.api import Client
from overnight.queue import order
from overnight.queue.records import Change, TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from tests.fixtures.agents import Background, agent_config, enqueue, make_daemon
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import make_snapshot
from tests.fixtures.uiserver import UiServer

pytestmark = pytest.mark.slow

HOSTILE = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"


def test_the_runs_list_shows_hostile_names_as_text_and_statuses_change_live(
    page: Page, ui_server: UiServer, store: TaskStore
) -> None:
    hostile, plain = submit_many(
        store,
        [
            Submission(make_snapshot(name=HOSTILE), TaskOptions()),
            Submission(make_snapshot(("python", "train.py", "--lr", "0.3")), TaskOptions()),
        ],
    )
    page.goto(f"{ui_server.url}/runs")
    expect(page.locator(f'tr[data-id="{hostile.id}"] td.task a')).to_have_text(HOSTILE)
    row = page.locator(f'tr[data-id="{plain.id}"]')
    expect(row.locator(".status")).to_have_text("queued")
    store.transition(plain.id, TaskStatus.RUNNING, Change(agent="box1"))
    expect(row.locator(".status")).to_have_text("running", timeout=5000)
    store.transition(plain.id, TaskStatus.FAILED, Change(exit_code=1, error="CUDA out of memory"))
    expect(row.locator(".status")).to_have_text("failed", timeout=5000)
    expect(row.locator(".error-line")).to_have_text("CUDA out of memory")
    page.fill('input[name="text"]', "--lr 0.3")
    page.click("text=Show")
    expect(page.locator("tr.run")).to_have_count(1)
    expect(page.locator("tr.run")).to_have_attribute("data-id", plain.id)
    assert "/runs?" in page.url and "text=--lr%200.3" in page.url
    page.reload()  # the pushed address is the whole page, not the table alone
    expect(page.locator("h1")).to_have_text("Runs")
    expect(page.locator("tr.run")).to_have_count(1)


def test_a_followed_log_shows_a_new_line_within_half_a_second(
    page: Page, ui_server: UiServer, store: TaskStore
) -> None:
    [task] = submit_many(store, [Submission(make_snapshot(), TaskOptions())])
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box1"))
    store.logs.append(task.id, [(time.time(), "epoch 0 \x1b[32mok\x1b[0m")])
    page.goto(f"{ui_server.url}/runs/{task.id}")
    expect(page.locator("#log .a-fg2")).to_have_text("ok")
    page.wait_for_timeout(500)  # the stream is open and waiting
    printed = time.monotonic()
    store.logs.append(task.id, [(time.time(), "epoch 1 <b>loss</b> 0.25")])
    expect(page.locator("#log")).to_contain_text("epoch 1 <b>loss</b> 0.25", timeout=3000)
    assert time.monotonic() - printed < 1.0  # the page polls Redis every 0.25 s
    page.fill("#log-search", "epoch 0")
    expect(page.locator("#log .l:visible")).to_have_count(1)
    store.transition(task.id, TaskStatus.FINISHED, Change(exit_code=0))
    expect(page.locator("#status")).to_have_text("finished", timeout=5000)


def test_cancel_and_clone_from_the_run_page(
    page: Page, ui_server: UiServer, store: TaskStore
) -> None:
    [task] = submit_many(
        store,
        [Submission(make_snapshot(("python", "train.py", "--lr", "0.1")), TaskOptions())],
    )
    page.goto(f"{ui_server.url}/runs/{task.id}")
    page.click("text=Cancel")
    page.click("#confirm")
    expect(page.locator("#result")).to_have_text(f"{task.id} canceled")
    assert store.get(task.id).status is TaskStatus.CANCELED
    page.goto(f"{ui_server.url}/runs/{task.id}")
    page.click("text=Clone with edited params")
    expect(page.locator('input[name="param.lr"]')).to_have_value("0.1")
    page.fill('input[name="param.lr"]', "0.02")
    page.click("#confirm")
    expect(page.locator("#result")).to_contain_text("lr=0.02")
    page.click("#new-run")
    expect(page.locator("#command")).to_have_text("python train.py --lr 0.02")


def test_two_runs_ticked_in_the_list_are_compared(
    page: Page, ui_server: UiServer, repo: Repo, redis_url: str
) -> None:
    with Client(redis_url) as api:
        [a] = api.enqueue("python train.py --lr 0.1", cwd=repo.path)
        [b] = api.enqueue("python train.py --lr 0.7", cwd=repo.path)
    page.goto(f"{ui_server.url}/runs")
    page.check(f'input[value="{a.id}"]')
    page.check(f'input[value="{b.id}"]')
    page.click("text=Compare selected")
    changed = page.locator("#compare tr.changed")
    expect(changed.filter(has_text="params")).to_have_text(re.compile(r"params\s*lr\s*0.7\s*0.1"))
    expect(page.locator("#compare thead")).to_contain_text(
        f"{b.id} (base)"
    )  # the list: newest first


def test_a_run_by_a_real_agent_shows_its_log_growing_and_its_end(
    page: Page,
    ui_server: UiServer,
    store: TaskStore,
    project: Repo,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
) -> None:
    task = enqueue(store, project, "--ticks", "12", name="ticker")
    page.goto(f"{ui_server.url}/runs/{task.id}")
    expect(page.locator("#status")).to_have_text("queued")
    agent = Background(make_daemon(agent_config(redis_url, tmp_path, venv_cache)), burst=True)
    try:
        expect(page.locator("#status")).to_have_text("running", timeout=60_000)
        expect(page.locator("#log")).to_contain_text("tick 2", timeout=30_000)
        expect(page.locator("#log")).to_contain_text("tick 11", timeout=30_000)
        expect(page.locator("#status")).to_have_text("finished", timeout=30_000)
        expect(page.locator("#log")).to_contain_text("done")
    finally:
        agent.stop()
    page.goto(f"{ui_server.url}/runs?status=finished")
    expect(page.locator(f'tr[data-id="{task.id}"] .status')).to_have_text("finished")


def test_hold_and_release_from_the_run_page(
    page: Page, ui_server: UiServer, store: TaskStore
) -> None:
    first, task = submit_many(store, [Submission(make_snapshot(), TaskOptions()) for _ in range(2)])
    page.goto(f"{ui_server.url}/runs/{task.id}")
    expect(page.locator("#status")).to_have_text("queued")
    page.click("text=Hold")
    page.click("#confirm")
    expect(page.locator("#result")).to_have_text(f"{task.id} held; held on default until released")
    assert store.get(task.id).status is TaskStatus.HELD
    page.click("#back-run")
    expect(page.locator("#status")).to_have_text("held")
    page.click("text=Release")
    page.click("#confirm")
    expect(page.locator("#result")).to_have_text(f"{task.id} released; 2nd of 2 in default")
    page.click("#back-run")
    expect(page.locator("#status")).to_have_text("queued")
    assert order.queue_order(store, "default") == [first.id, task.id]
