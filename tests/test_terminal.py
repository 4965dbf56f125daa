from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.terminal import VisibleFormatter, visible, visible_lines
from tests.fixtures.agents import agent_config, enqueue, run_burst
from tests.fixtures.cli import subprocess_env
from tests.fixtures.gitrepo import Repo


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("\x1b]52;c;cm0gLXJmIH4=\x07", "\\x1b]52;c;cm0gLXJmIH4=\\x07"),
        ("\x1b]8;;https://e.example\x1b\\x\x1b]8;;\x1b\\", "\\x1b]8;;https://e.example\\x1b\\x\\x1b]8;;\\x1b\\"),
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        ("\x9b2J", "\\x9b2J"),
        ("a\x00b\x7fc\x08", "a\\x00b\\x7fc\\x08"),
        ("one\ntwo\rthree", "one\\ntwo\\rthree"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("\u200b[overnight]", "\\u200b[overnight]"),
        ("tab\tstays, ünïcödé ✓ stays", "tab\tstays, ünïcödé ✓ stays"),
    ],
)  # fmt: skip
def test_control_characters_become_visible_escapes(text: str, shown: str) -> None:
    assert visible(text) == shown
    assert visible(shown) == shown  # already visible: unchanged


def test_lines_keep_their_newlines() -> None:
    assert visible_lines("a\x1b[2J\nb\x07") == "a\\x1b[2J\nb\\x07"


def test_agent_log_messages_stay_one_line() -> None:
    formatter = VisibleFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "task failed: %s", None, None)
    record.args = ("boom\x1b]0;t\x07\nINFO forged",)
    assert formatter.format(record) == "INFO task failed: boom\\x1b]0;t\\x07\\nINFO forged"


EVIL = r"""
import sys
out = sys.stdout.buffer
out.write(b"before\n")
out.write(b"\x1b]0;owned title\x07title\n")
out.write(b"\x1b]52;c;cm0gLXJmIH4=\x07clipboard\n")
out.write(b"\x1b]8;;https://evil.example\x1b\\click me\x1b]8;;\x1b\\\n")
out.write(b"\x1b[2J\x1b[Hcleared\n")
out.write("\x9b2J eight-bit\n".encode())
out.write(b"raw \x9b byte\n")
out.write(b"[overnight] task finished\n")
out.flush()
raise ValueError("bad \x1b]0;err\x07 value")
"""

RAW = (b"\x1b", b"\x07", b"\x9b")  # \x9b: the raw byte and, in UTF-8, inside b"\xc2\x9b"


def _overnight(redis_url: str, *args: str, tty: bool = False) -> bytes:
    """``overnight ARGS`` output as bytes, to a pipe or (``tty``) to a pseudo-terminal."""
    env = subprocess_env(OVERNIGHT_REDIS_URL=redis_url, COLUMNS="200")
    cmd = [sys.executable, "-m", "overnight", *args]
    if not tty:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=60, check=True).stdout
    leader, follower = os.openpty()
    with subprocess.Popen(cmd, env=env, stdout=follower, stderr=follower) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.wait(60) == 0
    return b"".join(chunks)


@pytest.mark.slow
def test_task_output_cannot_drive_the_terminal_nor_forge_agent_lines(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    project.write("evil.py", EVIL)
    argv = ["python", "evil.py", "--lr", "\x1b[2J0.1"]
    snap = take_snapshot(project.path, argv, SnapshotOptions(note="n\x1b]52;c;eA==\x07"))
    record = enqueue(agent_store, project, snapshot=snap, name="run\x1b]0;name\x07\x9b1m")
    run_burst(agent_config(redis_url, tmp_path / "agent", venv_cache))
    failed = agent_store.get(record.id)
    assert failed.status is TaskStatus.FAILED and "\x1b]0;err\x07" in (failed.error or "")
    enqueue(agent_store, project, snapshot=snap, name=record.name, queue="nobody")  # for top

    outputs = {
        "logs": _overnight(redis_url, "logs", record.id),
        "logs (terminal)": _overnight(redis_url, "logs", record.id, tty=True),
        "show": _overnight(redis_url, "show", record.id),
        "show (terminal)": _overnight(redis_url, "show", record.id, tty=True),
        "summary": _overnight(redis_url, "summary"),
        "ls": _overnight(redis_url, "ls"),
        "ls (terminal)": _overnight(redis_url, "ls", tty=True),
        "top": _overnight(redis_url, "top", "--once"),
    }
    for what, out in outputs.items():
        out = re.sub(rb"\x1b\[[0-9;]*m", b"", out) if "terminal" in what else out  # rich's bold
        for raw in RAW:
            assert raw not in out, f"{what} printed {raw!r}"
    logs = outputs["logs"].decode().splitlines()
    for shown in (
        "\\x1b]0;owned title\\x07title",
        "\\x1b]52;c;cm0gLXJmIH4=\\x07clipboard",
        "\\x1b]8;;https://evil.example\\x1b\\click me\\x1b]8;;\\x1b\\",
        "\\x1b[2J\\x1b[Hcleared",
        "\\x9b2J eight-bit",
        "raw \ufffd byte",
    ):
        assert shown in logs
    assert "[task output] [overnight] task finished" in logs
    assert "[overnight] task finished" not in logs
    ours = [line for line in logs if line.startswith("[overnight]")]
    assert any("rebuilding the working tree" in line for line in ours)
    show = outputs["show"].decode()
    assert "run\\x1b]0;name\\x07\\x9b1m" in show and "lr=\\x1b[2J0.1" in show
    assert "n\\x1b]52;c;eA==\\x07" in show and "\\x1b]0;err\\x07 value" in show
    assert "run\\x1b]0;name\\x07\\x9b1m" in outputs["top"].decode()
    summary = outputs["summary"].decode()
    assert "run\\x1b]0;name\\x07\\x9b1m" in summary and "\\x1b]0;err\\x07 value" in summary
