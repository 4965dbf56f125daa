"""Pulling outputs home: byte-identical, resumable, and never outside the chosen folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from overnight.agent.run.outputs import OutputCollector
from overnight.outputs import manifest
from overnight.outputs.pull import PART_SUFFIX, pull
from overnight.outputs.redisstore import RedisOutputStore, blob_key
from tests.fixtures.cli import subprocess_env


def _stored(redis_client: redis.Redis, tree: Path, files: dict[str, bytes]) -> RedisOutputStore:
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    store = RedisOutputStore(redis_client)
    collector = OutputCollector(
        store, redis_client, task_id="t1", attempt=0, tree=tree, patterns=(), cap_bytes=None
    )
    collector.sync(final=True)
    return store


FILES = {"outputs/result.csv": b"epoch,loss\n0,1.5\n", "outputs/ckpt/model.bin": os.urandom(3000)}


def test_pull_writes_every_file_byte_identical(redis_client: redis.Redis, tmp_path: Path) -> None:
    store = _stored(redis_client, tmp_path / "tree", FILES)
    report = pull(store, manifest.read(redis_client, "t1"), tmp_path / "home")
    assert sorted(report.fetched) == sorted(FILES)
    assert not report.failed
    for rel, data in FILES.items():
        assert (tmp_path / "home" / rel).read_bytes() == data
    assert not list((tmp_path / "home").rglob(f"*{PART_SUFFIX}"))


def test_an_interrupted_pull_resumes_fetching_only_what_is_missing(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = _stored(redis_client, tmp_path / "tree", FILES)
    found = manifest.read(redis_client, "t1")
    home = tmp_path / "home"
    # The interrupted pull: one file complete, the other a partial temporary file.
    (home / "outputs" / "ckpt").mkdir(parents=True)
    (home / "outputs/result.csv").write_bytes(FILES["outputs/result.csv"])
    (home / f"outputs/ckpt/model.bin{PART_SUFFIX}").write_bytes(b"half")
    done = next(e for e in found.entries if e.path == "outputs/result.csv")
    redis_client.delete(blob_key(done.digest))  # a fetch of it now would fail: it must be skipped
    report = pull(store, found, home)
    assert report.skipped == ["outputs/result.csv"]
    assert report.fetched == ["outputs/ckpt/model.bin"]
    assert not report.failed
    assert (home / "outputs/ckpt/model.bin").read_bytes() == FILES["outputs/ckpt/model.bin"]
    assert not (home / f"outputs/ckpt/model.bin{PART_SUFFIX}").exists()


def test_a_changed_local_file_is_fetched_again(redis_client: redis.Redis, tmp_path: Path) -> None:
    store = _stored(redis_client, tmp_path / "tree", FILES)
    home = tmp_path / "home"
    (home / "outputs").mkdir(parents=True)
    (home / "outputs/result.csv").write_bytes(b"epoch,loss\n0,9.9\n")  # same size, other bytes
    report = pull(store, manifest.read(redis_client, "t1"), home)
    assert "outputs/result.csv" in report.fetched
    assert (home / "outputs/result.csv").read_bytes() == FILES["outputs/result.csv"]


def test_a_manifest_path_climbing_out_is_refused_and_nothing_lands_outside(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = _stored(redis_client, tmp_path / "tree", FILES)
    good = manifest.read(redis_client, "t1").entries[0]
    planted = json.dumps({**json.loads(good.to_json())})
    for evil in ("../escape", "/tmp/abs-escape", "a/../../escape2", ".git/hooks/post-checkout"):
        redis_client.hset(manifest.entries_key("t1"), evil, planted)
    home = tmp_path / "deep" / "home"
    report = pull(store, manifest.read(redis_client, "t1"), home)
    assert len(report.failed) == 4
    assert all("refused" in why for why in report.failed)
    assert sorted(report.fetched) == sorted(FILES)  # the good entries still come home
    assert not (tmp_path / "deep" / "escape").exists()
    assert not (tmp_path / "escape2").exists()
    assert not Path("/tmp/abs-escape").exists()
    assert not (home / ".git").exists()


def test_a_symlink_in_the_destination_is_not_written_through(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = _stored(redis_client, tmp_path / "tree", FILES)
    outside = tmp_path / "outside"
    outside.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "outputs").symlink_to(outside)
    (outside / f"mine{PART_SUFFIX}").write_text("not the pull's to remove")
    report = pull(store, manifest.read(redis_client, "t1"), home)
    assert len(report.failed) == 2 and all("outside" in why for why in report.failed)
    assert report.cleaned == []
    assert [p.name for p in outside.iterdir()] == [f"mine{PART_SUFFIX}"]


def test_the_digest_of_what_is_pulled_is_checked(redis_client: redis.Redis, tmp_path: Path) -> None:
    store = _stored(redis_client, tmp_path / "tree", FILES)
    found = manifest.read(redis_client, "t1")
    entry = next(e for e in found.entries if e.path == "outputs/result.csv")
    redis_client.delete(blob_key(entry.digest))
    redis_client.rpush(blob_key(entry.digest), b"tampered")
    report = pull(store, found, tmp_path / "home")
    assert any("damaged" in why for why in report.failed)
    assert not (tmp_path / "home/outputs/result.csv").exists()
    assert hashlib.sha256(b"tampered").hexdigest() != entry.digest


_KILLED_PULL = """\
import os, signal, sys
from pathlib import Path
import redis
from overnight.outputs import manifest
from overnight.outputs.pull import pull
from overnight.outputs.redisstore import RedisOutputStore
client = redis.Redis.from_url(sys.argv[1])
def progress(entry, written):
    if entry.path == sys.argv[3]:  # a part of it is on disk: die as a power cut would
        os.kill(os.getpid(), signal.SIGKILL)
pull(RedisOutputStore(client), manifest.read(client, "t1"), Path(sys.argv[2]), progress)
"""


def test_a_pull_killed_mid_file_leaves_a_part_the_next_pull_removes_and_completes(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    files = {
        "outputs/a.bin": os.urandom(3_000_000),
        "outputs/c.txt": b"c",
        "outputs/ckpt/b.bin": os.urandom(3_000_000),  # pulled last: the kill lands in it
    }
    store = _stored(redis_client, tmp_path / "tree", files)
    home = tmp_path / "home"
    command = [sys.executable, "-c", _KILLED_PULL, redis_url, str(home), "outputs/ckpt/b.bin"]
    killed = subprocess.run(command, env=subprocess_env(), capture_output=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    part = home / f"outputs/ckpt/b.bin{PART_SUFFIX}"
    assert 0 < part.stat().st_size < len(files["outputs/ckpt/b.bin"])
    assert not (home / "outputs/ckpt/b.bin").exists()
    stale = home / f"outputs/gone.bin{PART_SUFFIX}"  # of a file the manifest no longer names
    stale.write_bytes(b"half")
    report = pull(store, manifest.read(redis_client, "t1"), home)
    assert sorted(report.cleaned) == [
        f"outputs/ckpt/b.bin{PART_SUFFIX}",
        f"outputs/gone.bin{PART_SUFFIX}",
    ]
    assert report.fetched == ["outputs/ckpt/b.bin"] and not report.failed
    assert sorted(report.skipped) == ["outputs/a.bin", "outputs/c.txt"]
    assert {
        str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()
    } == files
