"""FsspecOutputStore on a shared folder (file://) and on a real OpenSSH server (sftp://)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from overnight.errors import OutputError
from overnight.outputs.fsstore import FsspecOutputStore, open_fsspec_store
from overnight.outputs.sftp import READ_WINDOW
from overnight.outputs.store import CHUNK
from tests.fixtures.services import free_port, missing_service
from tests.fixtures.sshd import SshServer

BLOB = os.urandom(3 * CHUNK + CHUNK // 2)  # 3.5 MB: four chunks, the last one short
DIGEST = hashlib.sha256(BLOB).hexdigest()


def pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(params=["file", "sftp"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The store's folder, as the test sees it on this machine."""
    (tmp_path / "store").mkdir()
    return tmp_path / "store"


@pytest.fixture
def store(kind: str, folder: Path, request: pytest.FixtureRequest) -> FsspecOutputStore:
    if kind == "file":
        return FsspecOutputStore(f"file://{folder}")
    server: SshServer = request.getfixturevalue("sshd")
    return FsspecOutputStore(server.url(folder))


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` (read-only, tiny): a real filesystem that refuses writes,
    even root's, which ignores file modes."""
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        missing_service(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_multi_chunk_blob_round_trips(store: FsspecOutputStore, folder: Path) -> None:
    assert not store.exists(DIGEST)
    store.write(DIGEST, pieces(BLOB))
    assert store.exists(DIGEST)
    chunks = list(store.read(DIGEST))
    assert b"".join(chunks) == BLOB
    assert max(len(c) for c in chunks) <= CHUNK
    assert files_under(folder) == [folder / "blobs" / DIGEST[:2] / DIGEST]
    store.write(DIGEST, pieces(BLOB))  # the same bytes again: still one blob
    assert files_under(folder) == [folder / "blobs" / DIGEST[:2] / DIGEST]


def test_an_empty_blob_round_trips(store: FsspecOutputStore) -> None:
    empty = hashlib.sha256(b"").hexdigest()
    store.write(empty, [])
    assert store.exists(empty)
    assert list(store.read(empty)) == []


def test_a_deleted_blob_is_gone_and_deleting_it_again_is_no_error(
    store: FsspecOutputStore, folder: Path
) -> None:
    store.write(DIGEST, [BLOB])
    store.delete(DIGEST)
    assert not store.exists(DIGEST)
    store.delete(DIGEST)
    with pytest.raises(OutputError, match=f"has no blob {DIGEST}"):
        store.read(DIGEST)
    assert files_under(folder) == []


def test_bytes_that_do_not_match_the_digest_leave_nothing(
    store: FsspecOutputStore, folder: Path
) -> None:
    with pytest.raises(OutputError, match="changed while it was read") as caught:
        store.write(DIGEST, pieces(BLOB[:-1] + b"x"))
    assert "\n" not in str(caught.value)
    assert not store.exists(DIGEST)
    assert files_under(folder) == []  # neither the blob nor its temporary file


def test_a_file_failing_while_it_is_read_fails_as_itself_and_leaves_nothing(
    store: FsspecOutputStore, folder: Path
) -> None:
    def vanishing() -> Iterator[bytes]:
        yield BLOB[:CHUNK]
        raise FileNotFoundError("checkpoints/model.pt vanished")

    with pytest.raises(FileNotFoundError, match="vanished"):
        store.write(DIGEST, vanishing())
    assert files_under(folder) == []


def test_a_damaged_blob_is_an_error_when_read(store: FsspecOutputStore, folder: Path) -> None:
    store.write(DIGEST, [BLOB])
    (folder / "blobs" / DIGEST[:2] / DIGEST).write_bytes(b"someone else's bytes")
    with pytest.raises(OutputError, match="is damaged"):
        b"".join(store.read(DIGEST))


@pytest.mark.parametrize("digest", ["../../../etc/passwd", DIGEST.upper(), DIGEST[:-1], ""])
def test_a_name_that_is_not_a_digest_is_refused(store: FsspecOutputStore, digest: str) -> None:
    for call in (store.exists, store.read, store.delete, lambda d: store.write(d, [b""])):
        with pytest.raises(OutputError, match="not a sha256 hex digest"):
            call(digest)


@pytest.mark.slow
def test_memory_stays_bounded_for_a_big_blob(store: FsspecOutputStore) -> None:
    chunk = os.urandom(CHUNK)
    count = 128  # enough windows of an sftp read for answers paramiko kept to show
    hasher = hashlib.sha256()
    for _ in range(count):
        hasher.update(chunk)
    digest = hasher.hexdigest()
    tracemalloc.start()
    try:
        store.write(digest, (chunk for _ in range(count)))
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = sum(len(c) for c in store.read(digest))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == count * CHUNK
    assert write_peak < 8 * CHUNK, write_peak  # 128 MB went through; a few chunks at most held
    # sftp reads a window at a time, held a few times over by paramiko: never more, whatever
    # the size (answers it kept for bytes already read grew it by some 7% of the file)
    assert read_peak < 5 * READ_WINDOW + CHUNK, read_peak


def test_an_unreachable_sftp_host_is_one_line_without_the_password() -> None:
    port = free_port()  # nothing listens there
    store = open_fsspec_store(f"sftp://alice:hunter2@127.0.0.1:{port}/srv/overnight")
    assert store.url == f"sftp://alice@127.0.0.1:{port}/srv/overnight"
    with pytest.raises(OutputError) as caught:
        store.exists(DIGEST)
    message = str(caught.value)
    assert message.startswith(f"output store sftp://alice@127.0.0.1:{port}/srv/overnight: ")
    assert "hunter2" not in message
    assert "\n" not in message


def test_an_sftp_server_with_an_unknown_host_key_is_refused(
    sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    url = sshd.url(tmp_path / "store").replace(str(sshd.known_hosts), str(empty))
    with pytest.raises(OutputError, match="ssh-keyscan") as caught:
        open_fsspec_store(url).write(DIGEST, [BLOB])
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "store").exists()


def test_an_sftp_server_whose_host_key_changed_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = (tmp_path / "other.pub").read_text().split()[:2]
    changed = tmp_path / "known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other)}\n")
    url = sshd.url(tmp_path / "store").replace(str(sshd.known_hosts), str(changed))
    with pytest.raises(OutputError, match="BadHostKeyException"):
        open_fsspec_store(url).exists(DIGEST)


def test_an_sftp_store_connects_again_once_the_server_closed_its_connection(
    sshd: SshServer, tmp_path: Path
) -> None:
    (tmp_path / "store").mkdir()
    store = open_fsspec_store(sshd.url(tmp_path / "store"))
    store.write(DIGEST, [BLOB])
    sessions = psutil.Process(sshd.pid).children(recursive=True)
    assert sessions
    for session in sessions:  # as a restarted server or a dropped network would
        session.kill()
    psutil.wait_procs(sessions, timeout=30)
    with contextlib.suppress(OutputError):
        store.exists(DIGEST)  # may be the call that finds the connection broken
    assert store.exists(DIGEST)
    assert b"".join(store.read(DIGEST)) == BLOB


def test_an_sftp_store_follows_the_ssh_config(sshd: SshServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host storage\n"
        "  HostName 127.0.0.1\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        "  IdentityFile ~/.ssh/id_missing\n"  # ssh skips a key that is not there
        f"  IdentityFile {sshd.client_key}\n"
        f"  UserKnownHostsFile {sshd.known_hosts}\n"
    )
    (tmp_path / "store").mkdir()
    store = FsspecOutputStore(f"sftp://storage{tmp_path / 'store'}", home=home)
    store.write(DIGEST, pieces(BLOB))
    assert b"".join(store.read(DIGEST)) == BLOB


def test_a_store_whose_folder_is_missing_is_refused_not_made(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    missing = tmp_path / "mnt" / "shared"  # as a share that is not mounted
    if kind == "file":
        store = open_fsspec_store(f"file://{missing}")
    else:
        store = open_fsspec_store(request.getfixturevalue("sshd").url(missing))
    with pytest.raises(OutputError, match=f"its folder {missing} does not exist") as caught:
        store.write(DIGEST, [BLOB])
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "mnt").exists()
    missing.mkdir(parents=True)  # once it is there, the store writes
    store.write(DIGEST, [BLOB])
    assert store.exists(DIGEST)


def test_a_read_only_folder_is_one_line_naming_the_store(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as where:
        store = open_fsspec_store(f"file://{where}")
        with pytest.raises(OutputError) as caught:
            store.write(DIGEST, pieces(BLOB))
    message = str(caught.value)
    assert message.startswith(f"output store file://{where}: cannot store blob ")
    assert "Read-only file system" in message
    assert "\n" not in message


def test_a_full_store_keeps_no_partial_file(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", "size=1m") as where:
        store = open_fsspec_store(f"file://{where}")
        with pytest.raises(OutputError, match="No space left on device"):
            store.write(DIGEST, pieces(BLOB))
        assert not store.exists(DIGEST)
        assert files_under(where) == []
        small = os.urandom(1000)
        store.write(hashlib.sha256(small).hexdigest(), [small])  # the store still works


@pytest.mark.parametrize(
    ("url", "missing", "extra"),
    [("file:///srv/overnight", "fsspec", "stores"), ("s3://bucket/prefix", "s3fs", "s3")],
)
def test_a_store_without_its_package_names_the_extra_to_install(
    url: str, missing: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as on a machine without it
    with pytest.raises(OutputError, match=rf"pip install 'overnight\[{extra}\]'"):
        open_fsspec_store(url).exists(DIGEST)


def test_a_url_no_store_takes_is_an_output_error() -> None:
    with pytest.raises(OutputError, match="is not 'redis' or a file://"):
        open_fsspec_store("ftp://storage/srv")


def test_threads_may_share_a_store(store: FsspecOutputStore) -> None:
    blobs = [os.urandom(CHUNK + i) for i in range(4)]  # as several tasks' syncs at once

    def round_trip(blob: bytes) -> bool:
        digest = hashlib.sha256(blob).hexdigest()
        store.write(digest, pieces(blob))
        return b"".join(store.read(digest)) == blob

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(round_trip, blobs)) == [True] * 4
