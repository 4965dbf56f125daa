"""A task's outputs through a real agent (real Redis, git, venv, subprocess): stored whatever the
ending, deduplicated, capped, synced while it runs; and the collector's faults as notes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import redis

from overnight.agent.run.outputs import OUTPUT_DIR, VANISHED, OutputCollector
from overnight.api import Client
from overnight.config import ClientConfig
from overnight.errors import TaskNotFound
from overnight.outputs import manifest
from overnight.outputs.fsstore import FsspecOutputStore
from overnight.outputs.redisstore import RedisOutputStore
from overnight.outputs.store import OutputStore
from overnight.queue import replies
from overnight.queue.gc import collect
from overnight.queue.records import TaskOptions, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from tests.fixtures.agents import (
    Background,
    agent_config,
    log_text,
    make_daemon,
    run_burst,
    start_agent,
    wait_for,
    wait_status,
)
from tests.fixtures.cli import run_cli, subprocess_env
from tests.fixtures.gitrepo import Repo, make_repo
from tests.fixtures.services import RedisServer, free_port
from tests.fixtures.sshd import own_sshd

TRAIN = """\
import os, random, sys, time
from pathlib import Path
args = sys.argv[1:]
def arg(name, default):
    return args[args.index(name) + 1] if name in args else default
out = Path(os.environ["OVERNIGHT_OUTPUT_DIR"])
(out / "result.csv").write_text("epoch,loss\\n0,1.5\\n")
Path("checkpoints").mkdir(exist_ok=True)
Path("checkpoints/model.bin").write_bytes(random.Random(int(arg("--seed", "0"))).randbytes(2_500_000))
if "--link-to" in args:
    os.symlink(arg("--link-to", ""), out / "leak")
    os.symlink(os.path.dirname(arg("--link-to", "")), "linked")
print("written", flush=True)
if "--wait-for" in args:
    while not Path(arg("--wait-for", "")).exists():
        time.sleep(0.05)
sys.exit(int(arg("--exit", "0")))
"""


def checkpoint(seed: int) -> bytes:
    return random.Random(seed).randbytes(2_500_000)


@pytest.fixture
def trainer(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path, name="trainer")
    repo.write("train.py", TRAIN)
    repo.write("requirements.txt", "")
    repo.commit("train script")
    repo.push()
    return repo


def _enqueue(
    store: TaskStore, repo: Repo, *args: str, outputs: tuple[str, ...] = (), **options: object
) -> str:
    snap = take_snapshot(repo.path, ["python", "train.py", *args], SnapshotOptions(outputs=outputs))
    return submit(store, snap, TaskOptions(queue="q", **options)).id  # type: ignore[arg-type]


def _client(redis_url: str) -> Client:
    return Client(config=ClientConfig(redis_url=redis_url))


def test_outputs_of_a_failed_run_are_listed_and_pulled_byte_identical(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    task = _enqueue(
        agent_store, trainer, "--seed", "1", "--exit", "3", outputs=("checkpoints/*.bin", "none/*")
    )
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
    record = agent_store.get(task)
    assert record.status is TaskStatus.FAILED and record.exit_code == 3  # outputs changed nothing
    with _client(redis_url) as client:
        found = client.outputs(task)
        assert [e.path for e in found.entries] == ["checkpoints/model.bin", "outputs/result.csv"]
        assert {e.attempt for e in found.entries} == {0}
        assert [(n.path, n.reason) for n in found.notes] == [
            ("none/*", "the pattern matched no file")
        ]
        report = client.pull(task, to=tmp_path / "home")
    assert sorted(report.fetched) == ["checkpoints/model.bin", "outputs/result.csv"]
    assert (tmp_path / "home/checkpoints/model.bin").read_bytes() == checkpoint(1)
    assert (tmp_path / "home/outputs/result.csv").read_text() == "epoch,loss\n0,1.5\n"
    assert "[overnight] outputs: 2 file(s) stored now (2 new to the store)" in log_text(
        agent_store, task
    )


def test_the_same_checkpoint_in_a_second_task_adds_no_blob(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    first = _enqueue(agent_store, trainer, "--seed", "2", outputs=("checkpoints",))
    second = _enqueue(agent_store, trainer, "--seed", "2", outputs=("checkpoints",))
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
    client = agent_store.redis
    assert len(client.keys("overnight:outblob:*")) == 2  # result.csv and model.bin, once each
    digest = hashlib.sha256(checkpoint(2)).hexdigest()
    assert set(replies.texts(client.smembers(manifest.users_key(digest)))) == {first, second}
    assert "(0 new to the store)" in log_text(agent_store, second)


def test_a_file_over_the_cap_is_noted_not_stored(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    task = _enqueue(agent_store, trainer, outputs=("checkpoints/model.bin",))
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache, max_output_mb=1.0))
    assert agent_store.get(task).status is TaskStatus.FINISHED
    found = manifest.read(agent_store.redis, task)
    assert [e.path for e in found.entries] == ["outputs/result.csv"]
    [note] = found.notes
    assert note.path == "checkpoints/model.bin"
    assert "max_output_mb" in note.reason and "output_store" in note.reason
    assert len(agent_store.redis.keys("overnight:outblob:*")) == 1


def test_a_periodic_sync_stores_outputs_while_the_task_runs(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    release = tmp_path / "release"
    task = _enqueue(agent_store, trainer, "--wait-for", str(release))
    config = agent_config(redis_url, tmp_path / "agent", venv_cache, output_sync_interval=0.2)
    agent = Background(make_daemon(config), burst=True)
    try:
        found = wait_for(
            lambda: manifest.read(agent_store.redis, task).entries, what="a periodic sync"
        )
        assert agent_store.get(task).status is TaskStatus.RUNNING
        assert {e.path for e in found} == {"outputs/result.csv"}
    finally:
        release.touch()
        agent.stop()
    assert wait_status(agent_store, task, TaskStatus.FINISHED).status is TaskStatus.FINISHED


def test_a_timed_out_run_and_one_requeued_by_its_agent_stopping_keep_their_outputs(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    never = str(tmp_path / "never")
    timed_out = _enqueue(agent_store, trainer, "--wait-for", never, timeout=1.0)
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache, grace=0.5))
    assert agent_store.get(timed_out).status is TaskStatus.FAILED
    assert [e.path for e in manifest.read(agent_store.redis, timed_out).entries] == [
        "outputs/result.csv"
    ]
    requeued = _enqueue(agent_store, trainer, "--wait-for", never)
    agent = Background(make_daemon(agent_config(redis_url, tmp_path / "agent", venv_cache)))
    try:
        wait_for(lambda: "written" in log_text(agent_store, requeued), what="the outputs")
    finally:
        agent.stop(force=True)
    assert agent_store.get(requeued).status is TaskStatus.QUEUED
    assert [e.path for e in manifest.read(agent_store.redis, requeued).entries] == [
        "outputs/result.csv"
    ]


def test_symlinks_out_of_the_tree_are_not_followed(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the agent's secret")
    task = _enqueue(agent_store, trainer, "--link-to", str(secret), outputs=("linked",))
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
    assert agent_store.get(task).status is TaskStatus.FINISHED
    found = manifest.read(agent_store.redis, task)
    assert [e.path for e in found.entries] == ["outputs/result.csv"]
    assert [n.path for n in found.notes] == ["linked", "outputs/leak"]
    assert "not followed" in found.notes[1].reason


# -- the collector's faults, on a tree of its own ------------------------------------------------


def _collector(
    client: redis.Redis, tree: Path, store: OutputStore | None = None
) -> OutputCollector:
    return OutputCollector(
        store or RedisOutputStore(client),
        client,
        task_id="t1",
        attempt=0,
        tree=tree,
        patterns=(),
        cap_bytes=None,
    )


def test_a_store_that_is_down_is_a_note_and_the_next_sync_retries(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    (tmp_path / OUTPUT_DIR).mkdir()
    (tmp_path / OUTPUT_DIR / "a.txt").write_text("a")
    down = RedisOutputStore(redis.Redis(port=1, socket_connect_timeout=1))  # nothing listens
    collector = _collector(client, tmp_path, down)
    report = collector.sync()
    assert report.not_kept == 1 and report.stored == 0
    [note] = manifest.read(client, "t1").notes
    assert "not stored" in note.reason and "next sync" in note.reason
    collector.store = RedisOutputStore(client)  # the store is back
    assert collector.sync().stored == 1
    found = manifest.read(client, "t1")
    assert [e.path for e in found.entries] == ["outputs/a.txt"] and not found.notes


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _notes(client: redis.Redis) -> dict[str, str]:
    return {n.path: n.reason for n in manifest.read(client, "t1").notes}


def _stored_paths(client: redis.Redis) -> list[str]:
    return [e.path for e in manifest.read(client, "t1").entries]


class _CountingStore(FsspecOutputStore):
    """An fsspec store that counts the blobs it was asked about."""

    asked = 0

    def exists(self, digest: str) -> bool:
        self.asked += 1
        return super().exists(digest)


@pytest.mark.slow
def test_an_sftp_store_that_stops_is_a_note_per_file_and_the_next_sync_stores_them(
    client: redis.Redis, tmp_path: Path
) -> None:
    outputs = tmp_path / "tree" / OUTPUT_DIR
    outputs.mkdir(parents=True)
    (outputs / "a.txt").write_text("a")
    (tmp_path / "store").mkdir()
    with own_sshd() as server:
        store = _CountingStore(server.server.url(tmp_path / "store"), home=tmp_path)
        collector = _collector(client, tmp_path / "tree", store)
        assert collector.sync().stored == 1
        server.stop()  # the listener and the agent's connection
        (outputs / "b.txt").write_text("b")
        (outputs / "c.txt").write_text("c")
        store.asked = 0
        report = collector.sync()
        assert (report.stored, report.not_kept) == (0, 2)
        assert store.asked == 1  # found down once: the other file waits for the next sync
        notes = _notes(client)
        assert set(notes) == {"outputs/b.txt", "outputs/c.txt"}
        for reason in notes.values():
            assert reason.startswith(f"not stored: output store {store.url}: cannot ")
            assert reason.endswith("; retried at the next sync") and "\n" not in reason
        server.start()
        assert collector.sync().stored == 2
    assert _notes(client) == {}
    assert _stored_paths(client) == ["outputs/a.txt", "outputs/b.txt", "outputs/c.txt"]


@pytest.mark.slow
def test_a_full_redis_store_notes_the_file_it_refused_and_keeps_the_rest(
    client: redis.Redis, tmp_path: Path
) -> None:
    server = RedisServer(port=free_port(), workdir=tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    full = redis.Redis.from_url(server.url)
    try:
        full.config_set("maxmemory", str(full.info("memory")["used_memory"] + 2_000_000))
        full.config_set("maxmemory-policy", "noeviction")
        outputs = tmp_path / "tree" / OUTPUT_DIR
        outputs.mkdir(parents=True)
        (outputs / "big.bin").write_bytes(os.urandom(4_000_000))
        (outputs / "small.txt").write_text("small")
        collector = _collector(client, tmp_path / "tree", RedisOutputStore(full))
        report = collector.sync()
        assert (report.stored, report.not_kept) == (1, 1)
        assert _stored_paths(client) == ["outputs/small.txt"]
        reason = _notes(client)["outputs/big.bin"]
        assert reason.startswith("not stored: cannot store a blob in Redis: Redis is out of memory")
        assert full.keys("*partial*") == []  # the half-written blob went
        full.config_set("maxmemory", "0")  # room again
        assert collector.sync().stored == 1
        assert _notes(client) == {}
    finally:
        full.close()
        server.stop()


class _DeletingStore(RedisOutputStore):
    """The Redis store, and a task deleting ``victim`` while the store writes another file."""

    def __init__(self, client: redis.Redis, victim: Path) -> None:
        super().__init__(client)
        self.victim = victim

    def write(self, digest: str, chunks: Iterable[bytes]) -> None:
        super().write(digest, chunks)
        self.victim.unlink(missing_ok=True)


def test_a_file_deleted_between_listing_and_reading_is_a_note(
    client: redis.Redis, tmp_path: Path
) -> None:
    outputs = tmp_path / OUTPUT_DIR
    outputs.mkdir()
    (outputs / "a.txt").write_text("a")
    (outputs / "b.txt").write_text("b")  # listed with a.txt, deleted while a.txt is stored
    collector = _collector(client, tmp_path, _DeletingStore(client, outputs / "b.txt"))
    report = collector.sync(final=True)
    assert (report.stored, report.not_kept) == (1, 1)
    assert _notes(client) == {"outputs/b.txt": VANISHED}
    (outputs / "b.txt").write_text("b again")
    assert collector.sync().stored == 1
    assert _notes(client) == {}
    assert _stored_paths(client) == ["outputs/a.txt", "outputs/b.txt"]


_SYNC = """\
import sys
from pathlib import Path
import redis
from overnight.agent.run.outputs import OutputCollector
from overnight.outputs.redisstore import RedisOutputStore
client = redis.Redis.from_url(sys.argv[1])
store = RedisOutputStore(client)
OutputCollector(
    store, client, task_id="t1", attempt=0, tree=Path(sys.argv[2]), patterns=(), cap_bytes=None
).sync()
client.close()
"""


@pytest.mark.slow
def test_an_unreadable_file_is_a_note_and_stored_once_it_can_be_read(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    outputs = tmp_path / OUTPUT_DIR
    outputs.mkdir()
    (outputs / "locked.txt").write_text("locked")
    (outputs / "open.txt").write_text("open")
    (outputs / "locked.txt").chmod(0)
    # root reads any file: its sync runs without the capabilities that let it
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    command = [*(unprivileged if os.geteuid() == 0 else []), sys.executable, "-c", _SYNC]
    subprocess.run([*command, redis_url, str(tmp_path)], check=True, env=subprocess_env())
    assert _stored_paths(client) == ["outputs/open.txt"]
    assert _notes(client) == {
        "outputs/locked.txt": "unreadable: Permission denied; stored once it can be read"
    }
    (outputs / "locked.txt").chmod(0o644)
    assert _collector(client, tmp_path).sync().stored == 2
    assert _notes(client) == {}


@pytest.mark.slow
def test_a_task_whose_store_is_down_finishes_and_its_record_names_what_was_not_stored(
    agent_store: TaskStore, trainer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    (tmp_path / "store").mkdir()
    task = _enqueue(agent_store, trainer, outputs=("checkpoints",))
    with own_sshd() as server:
        url = server.server.url(tmp_path / "store")
        server.stop()
        run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache, output_store=url))
    assert agent_store.get(task).status is TaskStatus.FINISHED
    found = manifest.read(agent_store.redis, task)
    assert found.entries == ()
    assert {n.path for n in found.notes} == {"checkpoints/model.bin", "outputs/result.csv"}
    assert all(n.reason.startswith("not stored: output store sftp://") for n in found.notes)
    assert "2 not kept" in log_text(agent_store, task)


def test_only_changed_files_are_read_again(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    (tmp_path / OUTPUT_DIR).mkdir()
    (tmp_path / OUTPUT_DIR / "a.txt").write_text("a")
    (tmp_path / OUTPUT_DIR / "b.txt").write_text("b")
    collector = _collector(client, tmp_path)
    assert collector.sync().stored == 2
    assert collector.sync().stored == 0
    (tmp_path / OUTPUT_DIR / "b.txt").write_text("bb")
    os.utime(tmp_path / OUTPUT_DIR / "b.txt", ns=(1, 1))
    report = collector.sync()
    assert (report.stored, report.uploaded) == (1, 1)


def test_an_unreadable_output_is_a_note(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    (tmp_path / OUTPUT_DIR).mkdir()
    os.mkfifo(tmp_path / OUTPUT_DIR / "pipe")  # not a regular file: skipped, never read
    (tmp_path / OUTPUT_DIR / "dir.bin").mkdir()
    report = _collector(client, tmp_path).sync(final=True)
    assert report.stored == 0
    assert manifest.read(client, "t1").entries == ()


# -- resuming: the stored outputs restored into the next attempt's tree --------------------------

RESUMING = """\
import os, sys, time
from pathlib import Path
out = Path(os.environ["OVERNIGHT_OUTPUT_DIR"])
ckpt = out / "ckpt" / "epoch.txt"
print(f"pid={os.getpid()}", flush=True)
print("resume=" + os.environ.get("OVERNIGHT_RESUME", "unset"), flush=True)
epoch = int(ckpt.read_text()) if os.environ.get("OVERNIGHT_RESUME") else 0
print(f"starting at epoch {epoch}", flush=True)
ckpt.parent.mkdir(exist_ok=True)
ckpt.write_text(str(epoch + 1))
if len(sys.argv) > 1:
    while not Path(sys.argv[1]).exists():
        time.sleep(0.05)
sys.exit(3 if epoch == 0 else 0)
"""


@pytest.fixture
def resumer(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path, name="resumer")
    repo.write("train.py", RESUMING)
    repo.write("requirements.txt", "")
    os.symlink(str(tmp_path / "outside"), repo.path / "linked")  # a link the repository holds
    repo.commit("a script that checkpoints")
    repo.push()
    return repo


def _epoch(store: TaskStore, task_id: str) -> str:
    """The checkpoint the task stored last."""
    found = manifest.read(store.redis, task_id)
    [entry] = [e for e in found.entries if e.path == "outputs/ckpt/epoch.txt"]
    return b"".join(RedisOutputStore(store.redis).read(entry.digest)).decode()


@pytest.mark.slow
def test_a_requeued_task_resumes_from_its_stored_outputs(
    agent_store: TaskStore, resumer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    release = tmp_path / "release"
    task = _enqueue(agent_store, resumer, str(release))
    agent = Background(make_daemon(agent_config(redis_url, tmp_path / "agent", venv_cache)))
    try:
        wait_for(lambda: "starting at epoch 0" in log_text(agent_store, task), what="epoch 0")
    finally:
        agent.stop(force=True)  # the agent's shutdown requeues the task, outputs stored
    assert agent_store.get(task).status is TaskStatus.QUEUED
    assert _epoch(agent_store, task) == "1"
    release.touch()
    run_burst(agent_config(redis_url, tmp_path / "other", venv_cache, name="agent-b"))
    record = agent_store.get(task)
    text = log_text(agent_store, task)
    assert record.status is TaskStatus.FINISHED, text  # epoch 1: it resumed, else it fails
    assert "resume=1" in text and "starting at epoch 1" in text
    assert "[overnight] resuming: 1 stored output file(s) restored into the tree" in text
    assert "attempt 1 resumed from 1 stored output file(s)" in record.notes
    assert _epoch(agent_store, task) == "2"


@pytest.mark.slow
def test_a_task_lost_with_its_agent_resumes_on_its_retry_elsewhere(
    agent_store: TaskStore, resumer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    release = tmp_path / "release"
    task = _enqueue(agent_store, resumer, str(release), retries=1)
    config = agent_config(redis_url, tmp_path / "agent", venv_cache, output_sync_interval=0.2)
    first = start_agent(config, tmp_path, "--queue", "q")
    second = None
    orphan = None
    try:
        wait_for(lambda: manifest.read(agent_store.redis, task).entries, what="a periodic sync")
        orphan = int(re.findall(r"^pid=(\d+)$", log_text(agent_store, task), re.M)[0])
        first.kill()
        os.killpg(orphan, signal.SIGKILL)  # the host went down with both
        release.touch()
        second = Background(make_daemon(dataclasses.replace(config, name="agent-b")))
        record = wait_status(agent_store, task, TaskStatus.FINISHED)
    finally:
        first.kill()
        if second is not None:
            second.stop()
        if orphan is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan, signal.SIGKILL)
    assert TaskStatus.LOST in [h.status for h in record.history]
    assert (record.agent, record.attempt) == ("agent-b", 1)
    text = log_text(agent_store, task)
    assert "resume=1" in text and "starting at epoch 1" in text, text
    assert _epoch(agent_store, task) == "2"


@pytest.mark.slow
def test_a_first_attempt_is_not_told_to_resume_even_if_its_spec_says_so(
    agent_store: TaskStore, resumer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    snap = take_snapshot(
        resumer.path, ["python", "train.py"], SnapshotOptions(env=("OVERNIGHT_RESUME=1",))
    )
    task = submit(agent_store, snap, TaskOptions(queue="q")).id
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
    assert agent_store.get(task).status is TaskStatus.FAILED  # epoch 0 exits 3
    text = log_text(agent_store, task)
    assert "resume=unset" in text and "resuming" not in text
    assert not any("resumed" in n for n in agent_store.get(task).notes)


@pytest.mark.slow
def test_retry_resume_starts_the_new_task_from_the_first_ones_outputs(
    agent_store: TaskStore, resumer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    first = _enqueue(agent_store, resumer)
    config = agent_config(redis_url, tmp_path / "agent", venv_cache)
    run_burst(config)
    assert agent_store.get(first).status is TaskStatus.FAILED  # epoch 0 exits 3
    plain = run_cli("retry", first, OVERNIGHT_REDIS_URL=redis_url)
    resumed = run_cli("retry", first, "--resume", OVERNIGHT_REDIS_URL=redis_url)
    assert plain.returncode == 0 and resumed.returncode == 0, resumed.stderr
    plain_id, resumed_id = plain.stdout.strip(), resumed.stdout.strip()
    assert agent_store.get(resumed_id).history[0].note == (
        f"retry of {first}, resuming from its 1 stored output file(s)"
    )
    collect(agent_store, older_than=0)  # the first task goes, with its manifest
    with pytest.raises(TaskNotFound):
        agent_store.get(first)
    run_burst(config)
    assert agent_store.get(plain_id).status is TaskStatus.FAILED
    assert "resume=unset" in log_text(agent_store, plain_id)
    assert agent_store.get(resumed_id).status is TaskStatus.FINISHED
    text = log_text(agent_store, resumed_id)
    assert "resume=1" in text and "starting at epoch 1" in text
    assert _epoch(agent_store, resumed_id) == "2"
    again = run_cli("retry", plain_id, "--resume", OVERNIGHT_REDIS_URL=redis_url)
    assert again.returncode == 0
    agent_store.redis.delete(manifest.entries_key(plain_id))
    nothing = run_cli("retry", plain_id, "--resume", OVERNIGHT_REDIS_URL=redis_url)
    assert "has no stored outputs; the retry starts afresh" in nothing.stderr


@pytest.mark.slow
def test_a_manifest_aimed_outside_the_tree_restores_nothing_there(
    agent_store: TaskStore, resumer: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    task = _enqueue(agent_store, resumer)
    store = RedisOutputStore(agent_store.redis)
    payload = b"planted by whoever can write to Redis"
    digest = hashlib.sha256(payload).hexdigest()
    store.write(digest, [payload])
    entry = manifest.OutputEntry("x", digest, len(payload), 0.0, 0.0, 0)
    for path in (str(outside / "abs.txt"), "../../../../escaped.txt", "linked/through.txt"):
        agent_store.redis.hset(manifest.entries_key(task), path, entry.to_json())
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
    text = log_text(agent_store, task)
    assert "resume=unset" in text  # nothing restored: the run is not told to resume
    assert list(outside.iterdir()) == []
    assert not list(tmp_path.rglob("escaped.txt"))
    assert text.count("[overnight] warning: output not restored:") == 3
    assert "through a symbolic link" in text and "climbs out" in text and "absolute" in text
    assert any("3 could not be restored" in n for n in agent_store.get(task).notes)
