from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import redis

import overnight
from overnight.errors import (
    MetricFileError,
    MissingScriptError,
    OutputGlobError,
    SnapshotTooLargeError,
    TaskNotFound,
    UsageError,
    WaitTimeout,
)
from overnight.queue import keys
from overnight.queue.records import Change, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.cli import REPO_ROOT, subprocess_env
from tests.fixtures.gitrepo import Repo


@pytest.mark.slow
def test_enqueue_and_get(repo: Repo, redis_url: str) -> None:
    repo.write("train.py", "print('changed')\n")
    [task] = overnight.enqueue(
        "python train.py --lr 0.1", queue="gpu", timeout="2h", note="api", cwd=repo.path,
        redis_url=redis_url,
    )  # fmt: skip
    assert task.status is TaskStatus.QUEUED and task.options.timeout == 7200
    [told] = overnight.enqueue(
        "python train.py", retries=1, retry_on="infra,oom", notify=["ntfy+https://ntfy.sh/lab"],
        notify_metric="loss", cwd=repo.path, redis_url=redis_url,
    )  # fmt: skip
    assert (told.options.retry_on, told.options.notify) == (
        ("infra", "oom"),
        ("ntfy+https://ntfy.sh/lab",),
    )
    assert told.options.notify_metric == "loss" and task.options.retry_on == ("infra",)
    assert overnight.get(task.id[:6], redis_url=redis_url) == task
    repo.write("train.py", "import argparse\nargparse.ArgumentParser().add_argument('--lr')\n")
    runs = overnight.enqueue(
        ["python", "train.py"], sweep={"lr": [0.1, 0.01]}, cwd=repo.path, redis_url=redis_url
    )
    assert [r.params for r in runs] == [{"lr": "0.1"}, {"lr": "0.01"}]
    with pytest.raises(UsageError, match=r"no option seed \(it has --lr\)"):
        overnight.enqueue(
            "python train.py", sweep={"seed": [1]}, cwd=repo.path, redis_url=redis_url
        )
    [added] = overnight.enqueue(
        "python train.py", sweep={"seed": [1]}, add_params=True, cwd=repo.path, redis_url=redis_url
    )
    assert added.argv == ("python", "train.py", "--seed", "1")
    assert task.note == "api" and task.sweep is None and runs[0].sweep == runs[1].sweep
    with overnight.Client(redis_url) as client:
        assert client.ls(sweep=str(runs[0].sweep)[:6]) == runs[::-1]
        assert client.ls(sweep=runs[1].id) == runs[::-1]
    with pytest.raises(TaskNotFound):
        overnight.get("ffffffffffff", redis_url=redis_url)


def test_the_client_loads_no_cli_nor_agent_code() -> None:
    probe = (
        "import sys, overnight\n"
        "overnight.Client\n"
        "heavy = ('rq', 'click', 'rich', 'docker', 'psutil', 'pynvml', 'overnight.commands', "
        "'overnight.agent')\n"
        "print(' '.join(m for m in sys.modules if m.startswith(heavy)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env=subprocess_env(),
    )  # fmt: skip
    assert done.stdout.split() == []


def test_api_is_exported() -> None:
    assert {"Client", "TaskRecord", "TaskStatus", "enqueue", "get"} <= set(overnight.__all__)
    assert overnight.TaskStatus("queued") is TaskStatus.QUEUED


def test_snapshot_records_without_redis(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("train.py", "print('changed')\n")
    snap = overnight.snapshot("python train.py --lr 0.1", note="why", tags=["a"], cwd=repo.path)
    assert snap.spec.argv == ("python", "train.py", "--lr", "0.1")
    assert (snap.spec.params, snap.spec.note, snap.spec.tags) == ({"lr": "0.1"}, "why", ("a",))
    assert snap.spec.repo.dirty and snap.blob(snap.spec.patch)
    assert overnight.Snapshot.from_json(snap.to_json()).spec == snap.spec
    repo.write("big.bin", b"\x00" * (2 * 1024 * 1024))
    monkeypatch.setenv("OVERNIGHT_MAX_UNTRACKED_FILE_MB", "1")  # settings as for the CLI
    with pytest.raises(SnapshotTooLargeError, match=r"big\.bin \(2\.0 MB\)"):
        overnight.snapshot(["python", "train.py"], cwd=repo.path)


def test_enqueue_defaults_gpus_by_queue(repo: Repo, redis_url: str) -> None:
    [cpu] = overnight.enqueue("python train.py", cwd=repo.path, redis_url=redis_url)
    [gpu] = overnight.enqueue("python train.py", queue="gpu", cwd=repo.path, redis_url=redis_url)
    assert (cpu.options.gpus, gpu.options.gpus) == (0, 1)


def test_enqueue_expect_and_front(repo: Repo, redis_url: str) -> None:
    [first] = overnight.enqueue("python train.py", cwd=repo.path, redis_url=redis_url)
    [ahead] = overnight.enqueue(
        "python train.py", expect="3h", front=True, cwd=repo.path, redis_url=redis_url
    )
    assert ahead.options.expect == 10800
    client = redis.Redis.from_url(redis_url)
    try:
        order = client.lrange("rq:queue:default", 0, -1)
        assert order == [ahead.id.encode(), first.id.encode()]
    finally:
        client.close()


def _readme_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_example_runs(
    repo: Repo, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OVERNIGHT_REDIS_URL", redis_url)
    monkeypatch.chdir(repo.path)
    exec(compile(_readme_example(), "README.md", "exec"), {})
    assert len(capsys.readouterr().out.splitlines()) == 2
    statuses = sorted(r.status.value for r in overnight.Client(redis_url).ls())
    assert statuses == ["canceled", "queued"]


def test_a_client_keeps_one_connection(repo: Repo, redis_url: str) -> None:
    counter = redis.Redis.from_url(redis_url)
    with overnight.Client(redis_url=redis_url) as client:
        before = int(counter.info("stats")["total_connections_received"])
        [task] = client.enqueue("python train.py", cwd=repo.path)
        assert client.get(task.id[:6]) == task and client.ls() == [task]
        assert client.logs(task.id) == [] and client.cancel(task.id).status.value == "canceled"
        assert client.wait([task.id]) == [client.get(task.id)]
        assert int(counter.info("stats")["total_connections_received"]) - before == 1


def test_get_never_writes_reap_does(
    repo: Repo, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overnight.queue.reaper.REAP_SETTLE", 0.0)
    [task] = overnight.enqueue("python train.py", cwd=repo.path, redis_url=redis_url)
    store = TaskStore(redis.Redis.from_url(redis_url))
    store.transition(task.id, TaskStatus.RUNNING, Change(agent="box"))
    store.redis.delete(keys.heartbeat(task.id))  # its agent vanished
    assert overnight.get(task.id, redis_url=redis_url).status is TaskStatus.RUNNING
    with overnight.Client(redis_url) as client:
        assert client.get(task.id).status is TaskStatus.RUNNING
        assert client.reap() == [task.id]
        assert client.get(task.id).status is TaskStatus.LOST


def test_wait_and_logs_follow_a_task(repo: Repo, redis_url: str) -> None:
    with overnight.Client(redis_url) as client:
        [task] = client.enqueue(["python", "train.py"], cwd=repo.path)
        client.store.transition(task.id, TaskStatus.RUNNING, Change(agent="box"))
        client.store.logs.append(task.id, [(1.0, "epoch 1"), (2.0, "epoch 2")])
        assert client.logs(task.id) == ["epoch 1", "epoch 2"]
        assert client.logs(task.id, tail=1) == ["epoch 2"]
        with pytest.raises(WaitTimeout, match="gave up waiting"):
            client.wait([task.id], timeout=0.1, poll=0.05)
        client.store.transition(task.id, TaskStatus.FINISHED, Change(exit_code=0))
        [done] = client.wait([task.id[:6]])
        assert done.status is TaskStatus.FINISHED and client.ls(status="finished") == [done]


def test_outputs_setting_reaches_the_spec_and_pull_is_exported(
    repo: Repo,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OVERNIGHT_OUTPUTS", "checkpoints/*.pt,plots")
    assert overnight.snapshot("python train.py", cwd=repo.path).spec.outputs == (
        "checkpoints/*.pt",
        "plots",
    )
    [task] = overnight.enqueue("python train.py", cwd=repo.path, redis_url=redis_url)
    with overnight.Client(redis_url) as client:
        assert client.outputs(task.id).entries == ()
    report = overnight.pull(task.id, to=tmp_path / "home", redis_url=redis_url)
    assert (report.fetched, report.failed) == ([], [])
    assert "pull" in overnight.__all__


@pytest.mark.slow
def test_compare_two_runs(
    repo: Repo, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [a] = overnight.enqueue("python train.py --lr 0.1", cwd=repo.path, redis_url=redis_url)
    repo.write("extra.py", "X = 1\n")
    [b] = overnight.enqueue("python train.py --lr 0.2", cwd=repo.path, redis_url=redis_url)
    monkeypatch.chdir(repo.path)  # the commit is here: nothing is fetched
    found = overnight.compare(a.id, b.id, redis_url=redis_url)
    [pair] = found.pairs
    assert [f.path for f in pair.code.files] == ["extra.py"]
    assert pair.code.patch.endswith("--- /dev/null\n+++ b/extra.py\n@@ -0,0 +1 @@\n+X = 1\n")
    assert [r.values for r in found.rows if r.field == "lr"] == [("0.1", "0.2")]
    with overnight.Client(redis_url) as client:  # tmp_path: no repository, the origin is fetched
        again = client.compare(a.id, b.id, cwd=tmp_path, allow_local_repos=True, stat_only=True)
    assert again.pairs[0].code.patch == "" and again.pairs[0].code.files == pair.code.files


def test_enqueue_and_snapshot_take_what_the_flags_do(
    repo: Repo, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERNIGHT_OUTPUTS", "plots")
    monkeypatch.setenv("TOKEN_X", "t")
    [task] = overnight.enqueue(
        "python train.py", outputs=["./checkpoints/*.pt", "runs/"], metrics=["outputs/m.csv"],
        grace="30s", env=["TOKEN_X"], allow_secret_env=True, cwd=repo.path, redis_url=redis_url,
    )  # fmt: skip
    assert task.options.grace == 30
    with overnight.Client(redis_url) as client:
        spec = client.store.load_snapshot(task.id).spec
    assert spec.outputs == ("plots", "checkpoints/*.pt", "runs")  # the setting's first
    assert (spec.metric_files, spec.env) == (("outputs/m.csv",), {"TOKEN_X": "t"})
    snap = overnight.snapshot(
        "python train.py", outputs=["a/*.pt"], metrics=["m.jsonl"], cwd=repo.path
    )
    assert (snap.spec.outputs, snap.spec.metric_files) == (("plots", "a/*.pt"), ("m.jsonl",))
    with pytest.raises(OutputGlobError, match=r"--outputs '\.\./x'"):
        overnight.snapshot("python train.py", outputs=["../x"], cwd=repo.path)
    with pytest.raises(MetricFileError, match=r"--metrics '/m\.csv'"):
        overnight.enqueue("python train.py", metrics=["/m.csv"], cwd=repo.path, redis_url=redis_url)
    repo.write("big.bin", b"\x00" * (2 * 1024 * 1024))
    with pytest.raises(SnapshotTooLargeError, match=r"big\.bin"):
        overnight.enqueue(
            "python train.py", max_untracked_file_mb=1, cwd=repo.path, redis_url=redis_url
        )
    [big] = overnight.enqueue(
        "python train.py", max_untracked_file_mb=3, max_snapshot_mb=30, cwd=repo.path,
        redis_url=redis_url,
    )  # fmt: skip
    with overnight.Client(redis_url) as client:
        assert client.ls() == [big, task]


def test_a_missing_script_is_refused_before_anything_queues(repo: Repo, redis_url: str) -> None:
    message = r"the command's script trian\.py does not exist .*; did you mean train\.py\?"
    with pytest.raises(MissingScriptError, match=message):
        overnight.enqueue(
            "python trian.py", sweep={"lr": [1, 2]}, cwd=repo.path, redis_url=redis_url
        )
    with pytest.raises(MissingScriptError, match=message):
        overnight.snapshot("python trian.py", cwd=repo.path)
    with overnight.Client(redis_url) as client:
        assert client.ls() == []


def test_warnings_go_to_the_warnings_module_not_the_terminal(
    repo: Repo, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.write(".gitignore", "data/\n")
    repo.write("data/train.csv", "a,b\n")
    command = "python train.py data/train.csv"
    with pytest.warns(overnight.OvernightWarning) as caught:
        [task] = overnight.enqueue(command, cwd=repo.path, redis_url=redis_url)
    ignored = [w for w in caught if "which git ignores" in str(w.message)]
    assert [str(w.message) for w in caught if "no requirements file" in str(w.message)]
    assert len(ignored) == 1 and ignored[0].filename == __file__  # the caller's line
    with overnight.Client(redis_url) as client, pytest.warns(overnight.OvernightWarning) as again:
        client.enqueue(command, cwd=repo.path)
    assert [w.filename for w in again] == [__file__] * len(again)
    with pytest.warns(overnight.OvernightWarning, match="which git ignores") as snapped:
        overnight.snapshot(command, cwd=repo.path)
    assert {w.filename for w in snapped} == {__file__}
    assert capsys.readouterr() == ("", "")  # a library prints nothing
    with warnings.catch_warnings():  # warnings as errors: refused before anything queues
        warnings.simplefilter("error", overnight.OvernightWarning)
        with pytest.raises(overnight.OvernightWarning, match="no requirements file"):
            overnight.enqueue(command, cwd=repo.path, redis_url=redis_url)
    with overnight.Client(redis_url) as client:
        assert len(client.ls()) == 2 and task in client.ls()
