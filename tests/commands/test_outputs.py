"""``overnight outputs``, ``pull``, ``show`` and ``enqueue --outputs`` against a real Redis."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from overnight.agent.run.outputs import OutputCollector
from overnight.errors import ExitCode
from overnight.outputs import manifest
from overnight.outputs.redisstore import RedisOutputStore
from overnight.queue.records import TaskOptions
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit, submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.spec import Snapshot
from tests.fixtures.gitrepo import Repo
from tests.fixtures.tasks import invoke, make_snapshot


def _with_outputs(store: TaskStore, tree: Path, snapshot: Snapshot | None = None) -> str:
    task = submit(store, snapshot or make_snapshot(), TaskOptions(queue="q")).id
    _store_outputs(store, task, tree)
    return task


def _store_outputs(store: TaskStore, task: str, tree: Path) -> None:
    (tree / "outputs").mkdir(parents=True)
    (tree / "outputs" / "result.csv").write_text("epoch,loss\n0,1.5\n")
    (tree / "outputs" / "model.bin").write_bytes(os.urandom(5000))
    OutputCollector(
        RedisOutputStore(store.redis),
        store.redis,
        task_id=task,
        attempt=0,
        tree=tree,
        patterns=("plots/*.png",),
        cap_bytes=None,
    ).sync(final=True)


def test_outputs_lists_the_files_and_the_notes(
    cli_env: Repo, store: TaskStore, tmp_path: Path
) -> None:
    task = _with_outputs(store, tmp_path / "tree")
    out = invoke("outputs", task).stdout
    assert "outputs/model.bin" in out and "outputs/result.csv" in out
    assert "not kept: plots/*.png: the pattern matched no file" in out
    data = json.loads(invoke("outputs", task[:6], "--json").stdout)
    assert [f["path"] for f in data["files"]] == ["outputs/model.bin", "outputs/result.csv"]
    assert data["files"][1]["size"] == 17 and data["files"][1]["attempt"] == 0
    shown = invoke("show", task).stdout
    assert "outputs:      2 file(s)" in shown and "1 not kept" in shown
    assert json.loads(invoke("show", task, "--json").stdout)["outputs"]["files"] == 2


def test_pull_downloads_to_the_default_folder_and_skips_on_a_second_run(
    cli_env: Repo, store: TaskStore, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    task = _with_outputs(store, tree)
    result = invoke("pull", task)
    assert result.exit_code == 0, result.output
    home = cli_env.path / "overnight-outputs" / task
    assert (home / "outputs/model.bin").read_bytes() == (tree / "outputs/model.bin").read_bytes()
    again = invoke("pull", task)
    assert "0 file(s) pulled, 2 already there" in again.stderr
    assert "partial" not in again.stderr
    (home / "outputs/model.bin.overnight-part").write_bytes(b"a killed pull's")
    cleaned = invoke("pull", task)
    assert f"{task}: removed 1 partial file(s) an interrupted pull left" in cleaned.stderr
    assert sorted(p.name for p in (home / "outputs").iterdir()) == ["model.bin", "result.csv"]


def test_pull_fetches_a_whole_sweep_or_tag_a_folder_per_task(
    cli_env: Repo, store: TaskStore, tmp_path: Path
) -> None:
    swept = make_snapshot(tags=("baseline",))
    first, second = (_with_outputs(store, tmp_path / f"tree{i}", swept) for i in range(2))
    other = _with_outputs(store, tmp_path / "other", make_snapshot(argv=("python", "b.py")))
    result = invoke("pull", "--sweep", first[:6], "--to", str(tmp_path / "sweep"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == sorted([first, second])
    assert (tmp_path / "sweep" / second / "outputs/model.bin").read_bytes() == (
        tmp_path / "tree1" / "outputs/model.bin"
    ).read_bytes()
    assert invoke("pull", "--tag", "baseline").exit_code == 0
    pulled = cli_env.path / "overnight-outputs"
    assert sorted(p.name for p in pulled.iterdir()) == sorted([first, second])
    assert other not in result.stderr
    assert invoke("pull", "--tag", "nope").exit_code == ExitCode.USAGE
    assert invoke("pull").exit_code == ExitCode.USAGE


def test_pull_sweep_takes_the_sweep_id_not_the_tasks_sharing_its_spec(
    cli_env: Repo, store: TaskStore, tmp_path: Path
) -> None:
    snapshot = make_snapshot(("python", "train.py", "--lr", "1"))
    swept = submit_sweep(store, snapshot, TaskOptions(queue="q"), [Sweep("lr", ("0.1", "0.2"))])
    clone = submit(store, snapshot, TaskOptions(queue="q")).id  # same spec, in no sweep
    for task in [r.id for r in swept] + [clone]:
        _store_outputs(store, task, tmp_path / task)
    sweep = swept[0].sweep
    assert sweep is not None
    for given in (sweep[:6], swept[1].id):
        dest = tmp_path / f"pulled-{given}"
        result = invoke("pull", "--sweep", given, "--to", str(dest))
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in dest.iterdir()) == sorted(r.id for r in swept)
    assert invoke("pull", "--sweep", "f" * 12).exit_code == ExitCode.NOT_FOUND


def test_pull_refuses_a_path_out_of_its_folder_and_exits_with_output(
    cli_env: Repo, store: TaskStore, tmp_path: Path
) -> None:
    task = _with_outputs(store, tmp_path / "tree")
    entry = manifest.read(store.redis, task).entries[0]
    store.redis.hset(manifest.entries_key(task), "../escape", entry.to_json())
    result = invoke("pull", task, "--to", str(tmp_path / "home"))
    assert result.exit_code == ExitCode.OUTPUT
    assert "climbs out through '..'" in result.stderr
    assert not (tmp_path / "escape").exists()
    assert (tmp_path / "home/outputs/result.csv").exists()


def test_enqueue_records_output_globs_from_flags_and_config(
    cli_env: Repo, store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERNIGHT_OUTPUTS", "plots/*.png")
    result = invoke("enqueue", "--outputs", "./checkpoints/", "--", "python", "train.py")
    assert result.exit_code == 0, result.output
    spec = store.load_snapshot(result.stdout.strip()).spec
    assert spec.outputs == ("plots/*.png", "checkpoints")
    refused = invoke("enqueue", "--outputs", "../elsewhere/*", "--", "python", "train.py")
    assert refused.exit_code == ExitCode.SNAPSHOT
    assert "--outputs '../elsewhere/*' cannot be collected" in refused.stderr


def test_gc_takes_outputs_older_than(cli_env: Repo, store: TaskStore, tmp_path: Path) -> None:
    _with_outputs(store, tmp_path / "tree")
    result = invoke("gc", "--outputs-older-than", "1d", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "the outputs of 0 more" in result.stdout
    assert invoke("gc", "--outputs-older-than", "soon").exit_code == ExitCode.USAGE
