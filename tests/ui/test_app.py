"""The page's routes over real tasks in a real Redis, through Starlette's TestClient."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from starlette.testclient import TestClient

from overnight.api import Client
from overnight.metrics.summary import MetricSummary
from overnight.outputs import manifest
from overnight.outputs.manifest import OutputEntry
from overnight.outputs.redisstore import RedisOutputStore
from overnight.queue import keys
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.failures import FailureKind
from overnight.queue.keys import new_sweep_id
from overnight.queue.order import queue_order
from overnight.queue.records import Change, TaskOptions, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import Submission, submit_many
from overnight.ui.app import UiSettings, create_app
from overnight.ui.security import Access
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import finish, make_snapshot

HOSTILE = "<script>alert('x')</script>"


def submit(
    store: TaskStore, argv: tuple[str, ...] = ("python", "train.py", "--lr", "0.1"), **kw: object
) -> TaskRecord:
    queue = str(kw.pop("queue", "default"))
    snapshot = make_snapshot(argv, **kw)  # type: ignore[arg-type]
    return submit_many(store, [Submission(snapshot, TaskOptions(queue=queue))])[0]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_the_runs_list_shows_tasks_with_their_params_and_escapes_their_text(
    client: TestClient, store: TaskStore
) -> None:
    plain = submit(store, ("python", "train.py", "--lr", "0.1", "--epochs", "3"))
    hostile = submit(store, name=HOSTILE, tags=("x<y",))
    page = client.get("/runs")
    assert page.status_code == 200
    assert plain.id in page.text and hostile.id in page.text
    assert HOSTILE not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "x&lt;y" in page.text
    assert '<th><a href="?sort=-lr">lr</a></th>' in page.text
    assert '<th><a href="?sort=-epochs">epochs</a></th>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_filters_narrow_the_list_as_ls_does(client: TestClient, store: TaskStore) -> None:
    gpu = submit(store, ("python", "a.py"), queue="gpu", tags=("base",))
    cpu = submit(store, ("python", "b.py", "--seed", "1"))
    finish(store, cpu.id)
    assert gpu.id in client.get("/runs?queue=gpu").text
    assert cpu.id not in client.get("/runs?queue=gpu").text
    assert cpu.id in client.get("/runs?status=finished").text
    assert gpu.id not in client.get("/runs?status=finished").text
    assert gpu.id in client.get("/runs?tag=base").text
    assert cpu.id not in client.get("/runs?tag=base").text
    assert cpu.id in client.get("/runs?text=B.PY").text
    assert gpu.id not in client.get("/runs?text=b.py").text
    assert "no tasks match" in client.get("/runs?since=2099-01-01").text
    bad = client.get("/runs?since=yesterdayish")
    assert "invalid --since" in bad.text and gpu.id not in bad.text
    assert "no sweep or task" in client.get("/runs?sweep=ffffffff").text


def test_metric_columns_sort_and_a_failed_runs_error_line(
    client: TestClient, store: TaskStore
) -> None:
    low, high = submit(store), submit(store)
    finish(store, low.id, loss=0.2)
    finish(store, high.id, loss=0.7)
    failed = submit(store)
    store.transition(failed.id, TaskStatus.RUNNING, Change(agent="box1"))
    store.transition(
        failed.id, TaskStatus.FAILED, Change(exit_code=1, error="ValueError: nan loss at step 7")
    )
    page = client.get("/runs?metric=loss&sort=loss").text
    assert page.index(low.id) < page.index(high.id) < page.index(failed.id)
    assert ">0.2<" in page and ">0.7<" in page
    assert "ValueError: nan loss at step 7" in page
    descending = client.get("/runs?metric=loss&sort=-loss").text
    assert descending.index(high.id) < descending.index(low.id)
    rows = client.get("/runs?sort=-loss", headers={"hx-request": "true", "hx-target": "runs"})
    assert rows.text.lstrip().startswith('<div id="runs">') and "<nav>" not in rows.text


def test_paging_goes_back_in_time(client: TestClient, store: TaskStore) -> None:
    records = [submit(store, ("python", "t.py", "--i", str(i))) for i in range(55)]
    first = client.get("/runs").text
    assert records[-1].id in first and records[4].id not in first
    assert 'href="?page=2"' in first
    second = client.get("/runs?page=2").text
    assert records[4].id in second and records[-1].id not in second
    assert 'id="next-page"' not in second


def test_statuses_tell_the_live_state_of_the_named_tasks(
    client: TestClient, store: TaskStore
) -> None:
    task = submit(store)
    assert client.get(f"/runs/statuses?id={task.id}").json()[task.id]["status"] == "queued"
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box1"))
    store.transition(task.id, TaskStatus.FAILED, Change(exit_code=2, error="boom\x1b[2J"))
    found = client.get(f"/runs/statuses?id={task.id}").json()[task.id]
    assert found["status"] == "failed" and found["final"] is True
    assert found["error"] == "boom\\x1b[2J"


def test_a_run_page_shows_its_command_code_log_charts_and_outputs(
    client: TestClient, store: TaskStore
) -> None:
    patch = b"diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-old\n+new <b>\n"
    task = submit(store, patch=patch, note="try a <higher> lr", tags=("base",))
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box1", gpu_ids=("0",)))
    store.logs.append(task.id, [(1.0, "\x1b[31mred\x1b[0m <i>not html</i>"), (2.0, "step 1")])
    store.redis.set(keys.series(task.id), '{"cpu_pct": [[0, 10.0], [5, 80.5]], "rss_mb": "bad"}')
    assert store.update_metrics(
        task.id,
        {"loss": MetricSummary.first(1.0, 0).updated(0.5, 10)},
        {"loss": [[1.0, 0, 1.0], [2.0, 10, 0.5]]},
        expect={TaskStatus.RUNNING},
        agent="box1",
    )
    data = b"weights\x00\x01"
    digest = hashlib.sha256(data).hexdigest()
    RedisOutputStore(store.redis).write(digest, [data])
    manifest.record(
        store.redis, task.id, OutputEntry("ckpt/model.pt", digest, len(data), 0.0, 1.0, 0)
    )
    page = client.get(f"/runs/{task.id[:8]}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "python train.py --lr 0.1" in html
    assert "lr=<b>0.1</b>" in html
    assert "try a &lt;higher&gt; lr" in html
    assert '<div class="d-add">+new &lt;b&gt;</div>' in html
    assert '<div class="d-del">-old</div>' in html
    assert "numpy==1.26.4" in html and "example.invalid/repo.git" in html
    assert '<span class="a-fg1">red</span> &lt;i&gt;not html&lt;/i&gt;' in html
    assert f'data-stream="/runs/{task.id}/log/stream?after=' in html
    assert '"cpu_pct"' in html and "80.5" in html and '"rss_mb"' not in html
    assert '"x_label": "step"' in html
    assert f"/runs/{task.id}/outputs/download?path=ckpt/model.pt" in html
    got = client.get(f"/runs/{task.id}/outputs/download?path=ckpt/model.pt")
    assert got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert client.get(f"/runs/{task.id}/outputs/download?path=../etc").status_code == 404
    assert client.get("/runs/ffffffffffff").status_code == 404


def test_the_log_streams_as_events_until_the_task_ends(
    client: TestClient, store: TaskStore
) -> None:
    task = submit(store)
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box1"))
    store.logs.append(task.id, [(1.0, "first"), (2.0, "\x1b[1msecond\x1b[0m")])
    finish_entries = store.logs.read(task.id)
    store.transition(task.id, TaskStatus.FINISHED, Change(exit_code=0))
    body = client.get(f"/runs/{task.id}/log/stream?after={finish_entries[0].id}").text
    assert "first" not in body
    assert '"html": "<span class=\\"a-b\\">second</span>"' in body
    assert body.rstrip().endswith("event: end\ndata: {}")
    assert "first\nsecond" in client.get(f"/runs/{task.id}/log.txt").text.replace(
        "\\x1b[1m", ""
    ).replace("\\x1b[0m", "")


def test_cancel_asks_for_confirmation_and_needs_the_csrf_token(
    client: TestClient, store: TaskStore
) -> None:
    task = submit(store)
    confirm = client.get(f"/runs/{task.id}/cancel")
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
    refused = client.post(f"/runs/{task.id}/cancel", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert store.get(task.id).status is TaskStatus.QUEUED
    done = client.post(f"/runs/{task.id}/cancel", data={"csrf": csrf_of(confirm.text)})
    assert done.status_code == 200 and f"{task.id} canceled" in done.text
    assert store.get(task.id).status is TaskStatus.CANCELED
    again = client.post(f"/runs/{task.id}/cancel", data={"csrf": csrf_of(confirm.text)})
    assert again.status_code == 409 and "refused" in again.text


def test_retry_and_clone_with_edited_params_make_new_tasks(
    client: TestClient, store: TaskStore
) -> None:
    task = submit(store, ("python", "train.py", "--lr", "0.1", "--epochs", "3"), note="base")
    finish(store, task.id)
    form = client.get(f"/runs/{task.id}/clone").text
    assert 'name="param.lr" value="0.1"' in form and 'name="param.epochs" value="3"' in form
    assert 'name="note" value="base"' in form
    csrf = csrf_of(form)
    cloned = client.post(
        f"/runs/{task.id}/clone",
        data={"csrf": csrf, "param.lr": "0.003", "param.epochs": "3", "note": "lower lr",
              "tags": "lr-scan", "queue": "default", "gpus": "0"},
    )  # fmt: skip
    assert cloned.status_code == 200, cloned.text
    new_id = re.search(r'id="new-run" href="/runs/([0-9a-f]+)"', cloned.text)
    assert new_id is not None
    clone = store.get(new_id.group(1))
    assert clone.argv == ("python", "train.py", "--lr", "0.003", "--epochs", "3")
    assert clone.clone_of == task.id and clone.note == "lower lr" and "lr-scan" in clone.tags
    retried = client.post(f"/runs/{task.id}/retry", data={"csrf": csrf})
    assert retried.status_code == 200 and "a retry of" in retried.text
    assert "retried as" in " ".join(store.get(task.id).notes)
    bad = client.post(f"/runs/{task.id}/clone", data={"csrf": csrf, "gpus": "many"})
    assert bad.status_code == 409 and "whole number" in bad.text


def test_read_only_serves_no_action(store: TaskStore) -> None:
    task, other = submit(store), submit(store)
    app = create_app(UiSettings(store=store, access=Access("127.0.0.1", read_only=True)))
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        page = client.get(f"/runs/{task.id}").text
        assert "read-only" in page and f"/runs/{task.id}/cancel" not in page
        assert f"/runs/{task.id}/hold" not in page and f"/runs/{task.id}/bump" not in page
        assert f"/runs/{other.id}/bump" not in client.get("/agents").text
        assert client.get(f"/runs/{task.id}/cancel").status_code == 404
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is None
        for action in ("cancel", "bump", "hold", "release", "move"):
            refused = client.post(f"/runs/{other.id}/{action}", data={"csrf": "x", "queue": "b"})
            assert refused.status_code == 404
    assert store.get(task.id).status is TaskStatus.QUEUED
    assert queue_order(store, "default") == [task.id, other.id]


def test_bump_hold_release_and_move_from_a_run_page_change_rqs_order(
    client: TestClient, store: TaskStore
) -> None:
    a, b, c = (submit(store, queue="gpu") for _ in range(3))
    page = client.get(f"/runs/{c.id}").text
    assert f'href="/runs/{c.id}/bump"' in page and f'href="/runs/{c.id}/hold"' in page
    assert f'href="/runs/{c.id}/release"' not in page
    confirm = client.get(f"/runs/{c.id}/bump")
    assert confirm.status_code == 200 and "front of queue gpu" in confirm.text
    csrf = csrf_of(confirm.text)
    forged = client.post(f"/runs/{c.id}/bump", data={"csrf": "forged"})
    assert forged.status_code == 403 and queue_order(store, "gpu") == [a.id, b.id, c.id]

    bumped = client.post(f"/runs/{c.id}/bump", data={"csrf": csrf})
    assert bumped.status_code == 200 and f"{c.id} bumped; 1st of 3 in gpu" in bumped.text
    assert queue_order(store, "gpu") == [c.id, a.id, b.id]

    held = client.post(f"/runs/{a.id}/hold", data={"csrf": csrf})
    assert held.status_code == 200 and f"{a.id} held; held on gpu" in held.text
    assert queue_order(store, "gpu") == [c.id, b.id]
    assert store.get(a.id).status is TaskStatus.HELD
    page = client.get(f"/runs/{a.id}").text
    assert 'id="status">held' in page and f'href="/runs/{a.id}/release"' in page
    assert f'href="/runs/{a.id}/hold"' not in page
    again = client.post(f"/runs/{a.id}/hold", data={"csrf": csrf})
    assert again.status_code == 409 and "it is held, not queued" in again.text

    released = client.post(f"/runs/{a.id}/release", data={"csrf": csrf})
    assert released.status_code == 200 and "released; 2nd of 3 in gpu" in released.text
    assert queue_order(store, "gpu") == [c.id, a.id, b.id]

    form = client.get(f"/runs/{b.id}/move").text
    assert 'name="queue"' in form
    unnamed = client.post(f"/runs/{b.id}/move", data={"csrf": csrf, "queue": " "})
    assert unnamed.status_code == 409 and "name the queue" in unnamed.text
    moved = client.post(f"/runs/{b.id}/move", data={"csrf": csrf, "queue": "cpu"})
    assert moved.status_code == 200 and "moved to cpu; 1st of 1 in cpu" in moved.text
    assert queue_order(store, "gpu") == [c.id, a.id] and queue_order(store, "cpu") == [b.id]
    front = client.post(f"/runs/{a.id}/move", data={"csrf": csrf, "queue": "cpu", "front": "yes"})
    assert front.status_code == 200 and queue_order(store, "cpu") == [a.id, b.id]
    same = client.post(f"/runs/{a.id}/move", data={"csrf": csrf, "queue": "cpu"})
    assert same.status_code == 409 and "on cpu already" in same.text
    finish(store, c.id)
    late = client.post(f"/runs/{c.id}/bump", data={"csrf": csrf})
    assert late.status_code == 409 and "it is finished, not queued" in late.text


def test_the_queues_page_holds_releases_and_bumps_from_its_order_list(
    client: TestClient, store: TaskStore
) -> None:
    a, b, c = (submit(store, queue="gpu") for _ in range(3))
    queues = client.get("/agents").text
    queues = queues[queues.index('id="queues"') :]
    assert f'href="/runs/{b.id}/hold"' in queues and f'href="/runs/{c.id}/bump"' in queues
    assert f'href="/runs/{a.id}/bump"' not in queues  # the first one is at the front already
    csrf = csrf_of(client.get(f"/runs/{b.id}/hold").text)
    assert client.post(f"/runs/{b.id}/hold", data={"csrf": csrf}).status_code == 200
    assert queue_order(store, "gpu") == [a.id, c.id]
    queues = client.get("/agents").text
    queues = queues[queues.index('id="queues"') :]
    held = queues[queues.index('class="order held"') :]
    assert f'data-id="{b.id}"' in held and f'href="/runs/{b.id}/release"' in held
    assert f'href="/runs/{b.id}/hold"' not in queues
    assert client.post(f"/runs/{c.id}/bump", data={"csrf": csrf}).status_code == 200
    released = client.post(f"/runs/{b.id}/release", data={"csrf": csrf})
    assert released.status_code == 200 and "1st of 3 in gpu" in released.text
    assert queue_order(store, "gpu") == [b.id, c.id, a.id]  # back before c, once behind it
    assert 'class="order held"' not in client.get("/agents").text


def test_held_status_failure_kinds_and_a_waiting_tasks_reason_are_shown(
    client: TestClient, store: TaskStore
) -> None:
    held, failed, waiting = submit(store), submit(store), submit(store)
    store.transition(held.id, TaskStatus.HELD, note="held", expect={TaskStatus.QUEUED})
    store.transition(failed.id, TaskStatus.RUNNING, Change(agent="box1"))
    store.transition(
        failed.id, TaskStatus.FAILED, Change(exit_code=137, error="killed", failure=FailureKind.OOM)
    )
    reason = "box1 leaves it for later: it needs about 3 h, its window closes in 1 h"
    store.redis.set(keys.wait_reason(waiting.id), reason, ex=60)
    listed = client.get("/runs?status=held").text
    assert held.id in listed and failed.id not in listed
    assert 'class="status s-held">held<' in listed
    runs = client.get("/runs").text
    row = runs[runs.index(f'data-id="{failed.id}"') :]
    assert "infrastructure failure (OOM kill)" in row[: row.index("</tr>")]
    found = client.get(f"/runs/statuses?id={failed.id}&id={held.id}").json()
    assert found[failed.id]["failure"] == "infrastructure failure (OOM kill)"
    assert found[held.id] == {**found[held.id], "status": "held", "failure": ""}
    page = client.get(f"/runs/{failed.id}").text
    assert 'id="failure">infrastructure failure (OOM kill)<' in page
    assert f'id="waits">waits: {reason}<' in client.get(f"/runs/{waiting.id}").text
    assert 'id="waits"' not in client.get(f"/runs/{held.id}").text


def test_a_sweep_page_ranks_its_runs_and_charts_a_metric_against_a_param(
    client: TestClient, store: TaskStore
) -> None:
    sweep = new_sweep_id()
    subs = [
        Submission(make_snapshot(("python", "t.py", "--lr", lr)), TaskOptions(), sweep=sweep,
                   argv=("python", "t.py", "--lr", lr))
        for lr in ("0.1", "0.01", "0.001")
    ]  # fmt: skip
    records = submit_many(store, subs)
    for record, loss in zip(records, (0.9, 0.3, 0.5), strict=True):
        finish(store, record.id, loss=loss)
    page = client.get(f"/sweeps/{sweep[:8]}").text
    ranked = [page.index(r.id) for r in records]
    assert ranked[1] < ranked[2] < ranked[0]  # by loss, lowest first
    assert '"title": "loss against lr"' in page
    assert '"x": [0.001, 0.01, 0.1]' in page and '"loss": [0.5, 0.3, 0.9]' in page
    assert "no sweep or task" in client.get("/sweeps/ffffffff").text


def test_agents_and_queues_show_gpus_holders_and_order(
    client: TestClient, store: TaskStore
) -> None:
    first, second = submit(store, queue="gpu"), submit(store, queue="gpu")
    running = submit(store, queue="gpu")
    store.transition(running.id, TaskStatus.RUNNING, Change(agent="box1", gpu_ids=("0",)))
    info = AgentInfo(
        name="box1", host="gpuhost", queues=("gpu",), gpus=("0", "1"), state="busy",
        tasks=(running.id,), heartbeat=time.time(),
        extra={"slots": {"gpus": {"0": {"task": running.id}, "1": {"unavailable": "used by pid 77"}}},
               "usage": {running.id: {"gpu0.util_pct": 93.0, "gpu0.mem_mb": 20480.0}},
               "windows": {"state": "open until mon 07:00"}},
    )  # fmt: skip
    registry = AgentRegistry(store.redis)
    registry.register(info)
    page = client.get("/agents").text
    assert "box1" in page and "gpuhost" in page and "window open until mon 07:00" in page
    assert "93 %" in page and "20480 MB" in page and "held back: used by pid 77" in page
    queues = page[page.index('id="queues"') :]
    assert queues.index(first.id[:8]) < queues.index(second.id[:8])
    assert running.id[:8] not in queues


def test_compare_shows_what_differs_and_the_code_diff(
    repo: Repo, redis_url: str, store: TaskStore
) -> None:
    with Client(redis_url) as api:
        repo.write("train.py", "lr = 0.1\n")
        [a] = api.enqueue("python train.py --lr 0.1", cwd=repo.path)
        repo.write("train.py", "lr = 0.5  # <higher>\n")
        [b] = api.enqueue("python train.py --lr 0.5", cwd=repo.path)
    settings = UiSettings(store=store, access=Access("127.0.0.1"), local_repo=repo.path)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
        page = client.get(f"/compare?id={a.id}&id={b.id[:8]}").text
        assert f"{a.id}</a> (base)" in page
        assert (
            '<tr class="changed"><th class="dim">params</th><th>lr</th><td>0.1</td><td>0.5</td>'
            in page
        )
        assert '<tr class="same"><th class="dim">run</th><th>queue</th>' in page
        assert "<th>image</th>" not in page  # a field no run has is left out, as in the CLI
        assert '<div class="d-add">+lr = 0.5  # &lt;higher&gt;</div>' in page
        one = client.get(f"/compare?id={a.id}").text
        assert "compare needs at least two tasks" in one


def test_a_task_whose_agent_vanished_shows_lost(
    client: TestClient, store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overnight.queue.reaper.REAP_SETTLE", 0.0)  # a young session Redis
    task = submit(store)
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box1"))
    store.redis.delete(keys.heartbeat(task.id))
    found = client.get(f"/runs/statuses?id={task.id}").json()[task.id]
    assert found["status"] == "lost" and found["failure"] == "infrastructure failure"
    assert 'id="failure">infrastructure failure<' in client.get(f"/runs/{task.id}").text


def test_chart_data_cannot_close_its_script_element(client: TestClient, store: TaskStore) -> None:
    task = submit(store)
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box1"))
    hostile = "</script><script>alert(1)</script>"
    assert store.update_metrics(
        task.id,
        {hostile: MetricSummary.first(1.0, 0)},
        {hostile: [[1.0, 0, 1.0]]},
        expect={TaskStatus.RUNNING},
        agent="box1",
    )
    page = client.get(f"/runs/{task.id}").text
    assert "<script>alert(1)" not in page
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in page
