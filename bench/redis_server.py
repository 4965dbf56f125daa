"""What the queue benches share: a throwaway redis-server (or ``--redis-url``) and a small repo."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis


@contextlib.contextmanager
def redis_url(given: str | None = None) -> Iterator[str]:
    """``given`` as is, else a fresh redis-server on a free port, stopped afterwards."""
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; install it or pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def make_repo(base: str) -> str:
    """A small git repo with one commit and an uncommitted change; returns its path."""
    path = f"{base}/work"
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main", path], check=True, env=env)
    with open(f"{path}/train.py", "w") as f:
        f.write("import sys\nprint(sys.argv)\n")
    with open(f"{path}/requirements.txt", "w") as f:
        f.write("numpy==1.26.4\ntorch==2.3.0\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True, env=env)
    with open(f"{path}/train.py", "a") as f:
        f.write("# uncommitted change\n")
    return path


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the script's docstring, with ``--redis-url``."""
    result = argparse.ArgumentParser(description=doc.splitlines()[0])
    result.add_argument("--redis-url", default=None, help="default: a throwaway redis-server")
    return result


@dataclass
class Bench:
    url: str
    client: redis.Redis
    repo: str  # a small git repo with an uncommitted change


@contextlib.contextmanager
def bench(given_url: str | None) -> Iterator[Bench]:
    """A flushed Redis and a repo in a temp dir, both gone afterwards."""
    with redis_url(given_url) as url, tempfile.TemporaryDirectory() as tmp:
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield Bench(url=url, client=client, repo=make_repo(tmp))
        finally:
            client.close()
