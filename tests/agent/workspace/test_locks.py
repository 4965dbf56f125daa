from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from overnight.agent.workspace.locks import FileLock
from overnight.errors import LockTimeout


def test_two_locks_on_one_path_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "a.lock"
    with FileLock(path) as first:
        assert first.locked and path.exists()
        assert not FileLock(path).try_acquire()
    other = FileLock(path)
    assert other.try_acquire()
    other.release()
    other.release()  # releasing twice is harmless


def test_timeout_raises_a_lock_timeout_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with FileLock(path), pytest.raises(LockTimeout, match=r"a\.lock within 0\.1s"):
        FileLock(path, timeout=0.1).acquire()


def test_waiting_ends_when_asked_to_stop(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    stop = threading.Event()
    with FileLock(path):
        timer = threading.Timer(0.1, stop.set)
        timer.start()
        waiter = FileLock(path)
        assert waiter.acquire(should_stop=stop.is_set) is False
        assert not waiter.locked
        timer.join()


def test_a_waiter_gets_the_lock_when_the_holder_releases(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    holder = FileLock(path)
    holder.acquire()
    threading.Timer(0.1, holder.release).start()
    with FileLock(path, timeout=30) as waiter:
        assert waiter.locked


def test_shared_locks_coexist_and_keep_an_exclusive_one_out(tmp_path: Path) -> None:
    path = tmp_path / "in-use.lock"
    readers = [FileLock(path, shared=True), FileLock(path, shared=True)]
    assert all(r.try_acquire() for r in readers)
    assert not FileLock(path).try_acquire()
    for r in readers:
        r.release()
    assert FileLock(path).try_acquire()


def test_a_lock_held_by_another_process_is_seen_and_freed_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from overnight.agent.workspace.locks import FileLock\n"
        "lock = FileLock(Path(sys.argv[1])); lock.acquire()\n"
        "print('held', flush=True); time.sleep(300)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert not FileLock(path).try_acquire()
        holder.kill()
        holder.wait()
        with FileLock(path, timeout=10):
            pass
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_acquiring_twice_with_one_object_is_a_bug(tmp_path: Path) -> None:
    with FileLock(tmp_path / "a.lock") as lock, pytest.raises(RuntimeError):
        lock.acquire()
