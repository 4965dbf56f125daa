"""Storing and pulling a task's outputs, through Redis and through sftp, against cp, rsync and scp.

Two sets of files: one large file (1 GB by default: a checkpoint) and many small ones (2,000
files of 8 KB: plots, logs, an Optuna study's trials). Each is stored as the agent stores it (an
``OutputCollector`` sync of a tree, which hashes every file, then uploads what the store lacks)
and pulled as ``overnight pull`` does (``overnight.outputs.pull.pull``), into a fresh Redis
server and a fresh local sshd. The same files are then copied with ``cp -r``, ``rsync -a`` (when
installed) and ``scp -r`` to the same sshd, in the same run: compare the ratios, the machines are
shared and noisy. Each store and pull runs in a process of its own, so its peak resident memory
(``ru_maxrss``) is the agent's (or the laptop's) alone, printed with what it grew by during the
transfer: streaming keeps that a few chunks, never near the file's size.

    python bench/outputs.py [--mb 1024] [--files 2000] [--file-kb 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))

import redis  # noqa: E402
from redis_server import redis_url  # noqa: E402

from overnight.agent.run.outputs import OUTPUT_DIR, OutputCollector  # noqa: E402
from overnight.outputs import manifest  # noqa: E402
from overnight.outputs.fsstore import FsspecOutputStore  # noqa: E402
from overnight.outputs.pull import pull  # noqa: E402
from overnight.outputs.redisstore import RedisOutputStore  # noqa: E402
from overnight.outputs.store import CHUNK, OutputStore  # noqa: E402
from overnight.units import format_bytes  # noqa: E402
from tests.fixtures.sshd import SshServer, own_sshd  # noqa: E402  (its own keys, a free port)


def write_sets(base: Path, mb: int, files: int, file_kb: int) -> dict[str, Path]:
    """The two trees, each with its files under ``outputs/``, written a chunk at a time."""
    big = base / "big" / OUTPUT_DIR
    big.mkdir(parents=True)
    with (big / "model.pt").open("wb") as out:
        for _ in range(mb * 1024 * 1024 // CHUNK):
            out.write(os.urandom(CHUNK))
    small = base / "small" / OUTPUT_DIR
    for n in range(files):
        folder = small / f"trial_{n // 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"metrics_{n}.json").write_bytes(os.urandom(file_kb * 1024))
    return {"1 file": base / "big", f"{files} files": base / "small"}


# -- a store or a pull, in a process of its own -----------------------------------------------


def child(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.redis)
    store: OutputStore
    if args.store == "redis":
        store = RedisOutputStore(client)
    else:
        store = FsspecOutputStore(args.store, home=Path(args.home))
    store.exists("0" * 64)  # connected, its modules loaded: what follows is the transfer's
    before = resident()
    started = time.perf_counter()
    if args.op == "store":
        collector = OutputCollector(
            store,
            client,
            task_id=args.task,
            attempt=0,
            tree=Path(args.tree),
            patterns=(),
            cap_bytes=None,
        )
        report = collector.sync(final=True)
        done = report.stored
    else:
        done = len(pull(store, manifest.read(client, args.task), Path(args.tree)).fetched)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    client.close()
    print(json.dumps({"seconds": seconds, "files": done, "peak_rss": peak, "before": before}))


def run_child(op: str, store: str, tree: Path, task: str, url: str, home: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", op, "--store", store, "--tree", str(tree)]
    command += ["--task", task, "--redis", url, "--home", str(home)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def resident() -> int:
    """This process's resident memory now, in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


# -- the tools the figures compare with --------------------------------------------------------


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def scp_command(server: SshServer) -> list[str]:
    return [
        "scp", "-q", "-r", "-P", str(server.port), "-i", str(server.client_key),
        "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
        "-o", "Compression=no",
    ]  # fmt: skip


def memory(result: dict[str, float]) -> str:
    peak, grown = int(result["peak_rss"]), int(result["peak_rss"] - result["before"])
    return f"   peak {format_bytes(peak)} (+{format_bytes(max(0, grown))})"


def row(name: str, seconds: float, size: int, against: float | None = None) -> str:
    rate = f"{size / seconds / 1e6:8.1f} MB/s" if seconds > 0 else ""
    ratio = f"  {seconds / against:5.2f}x" if against else ""
    return f"    {name:<28} {seconds:8.2f} s {rate}{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kb", type=int, default=8)
    parser.add_argument("--child", choices=("store", "pull"))
    for name in ("store", "tree", "task", "redis", "home"):
        parser.add_argument(f"--{name}")
    args = parser.parse_args()
    if args.child:
        args.op = args.child
        child(args)
        return
    rsync = shutil.which("rsync")
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp, redis_url() as url:
        base = Path(tmp)
        sets = write_sets(base / "data", args.mb, args.files, args.file_kb)
        with own_sshd() as daemon:
            server = daemon.server
            scp = scp_command(server)
            print(
                "time, rate, time against cp (Redis) or scp (sftp), and the peak resident memory "
                "of the process storing or pulling (what it grew by during the transfer)"
            )
            for label, tree in sets.items():
                files = [p for p in tree.rglob("*") if p.is_file()]
                size = sum(p.stat().st_size for p in files)
                print(f"\n{label}, {format_bytes(size)}:")
                cp_s = timed(["cp", "-r", str(tree / OUTPUT_DIR), str(base / f"cp-{len(files)}")])
                print(row("cp -r", cp_s, size))
                if rsync:
                    dest = str(base / f"rsync-{len(files)}")
                    print(row("rsync -a", timed([rsync, "-a", str(tree / OUTPUT_DIR), dest]), size))
                else:
                    print("    rsync -a                     not installed")
                remote = base / f"scp-{len(files)}"
                scp_s = timed([*scp, str(tree / OUTPUT_DIR), f"{server.user}@127.0.0.1:{remote}"])
                print(row("scp -r (to local sshd)", scp_s, size))
                folder = base / f"sftp-store-{len(files)}"
                folder.mkdir()
                stores = {"redis": "redis", "sftp": server.url(folder)}
                for kind, store in stores.items():
                    task = f"bench-{kind}-{len(files)}"
                    against = cp_s if kind == "redis" else scp_s
                    vs = "cp" if kind == "redis" else "scp"
                    stored = run_child("store", store, tree, task, url, base)
                    print(
                        row(f"store via {kind} (x {vs})", stored["seconds"], size, against)
                        + memory(stored)
                    )
                    home = base / f"home-{kind}-{len(files)}"
                    pulled = run_child("pull", store, home, task, url, base)
                    print(
                        row(f"pull via {kind} (x {vs})", pulled["seconds"], size, against)
                        + memory(pulled)
                    )
                    shutil.rmtree(home)
                    client = redis.Redis.from_url(url)
                    client.flushdb()  # the next set starts from an empty Redis
                    client.close()


if __name__ == "__main__":
    main()
