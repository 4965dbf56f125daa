from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from overnight.agent.run.logbatch import Line
from overnight.agent.run.process import LocalProcess
from overnight.agent.run.supervisor import (
    CANCELED,
    EXITED,
    TIMED_OUT,
    RunOutcome,
    supervise,
)
from tests.agent.run.test_process import gone

PY = sys.executable


class Collector:
    """A sink that records batches and can signal when a line shows up."""

    def __init__(self) -> None:
        self.batches: list[list[Line]] = []
        self.seen: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[Line]) -> None:
        with self.lock:
            self.batches.append(list(batch))
            for _, text in batch:
                for word, event in self.seen.items():
                    if word in text:
                        event.set()

    def when(self, word: str) -> threading.Event:
        return self.seen.setdefault(word, threading.Event())

    @property
    def lines(self) -> list[Line]:
        return [line for batch in self.batches for line in batch]

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.lines]


def start(tmp_path: Path, script: str) -> LocalProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return LocalProcess([PY, "-c", script], cwd=tmp_path, env=env)


def run(
    tmp_path: Path,
    script: str,
    sink: Callable[[Sequence[Line]], None] | None = None,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    timeout: float | None = None,
    grace: float = 5.0,
    **kwargs: Any,
) -> tuple[RunOutcome, Collector]:
    collector = Collector()
    outcome = supervise(
        start(tmp_path, script),
        sink or collector,
        should_stop=should_stop,
        timeout=timeout,
        grace=grace,
        **kwargs,
    )
    return outcome, collector


def test_output_arrives_in_order_with_timestamps(tmp_path: Path) -> None:
    script = (
        "import sys\nfor i in range(500):\n    print(i, file=sys.stderr if i % 2 else sys.stdout)\n"
    )
    outcome, sink = run(tmp_path, script)
    assert outcome.reason == EXITED and outcome.exit_code == 0
    assert sink.texts == [str(i) for i in range(500)]
    stamps = [ts for ts, _ in sink.lines]
    assert stamps == sorted(stamps)
    assert outcome.started <= stamps[0] and stamps[-1] <= outcome.ended + 1
    assert outcome.lines == 500 and outcome.dropped_lines == 0
    assert outcome.describe() == "exited with 0"


def test_an_observer_sees_every_line_in_order_even_those_the_sink_loses(tmp_path: Path) -> None:
    seen: list[str] = []

    def failing(batch: Sequence[Line]) -> None:
        raise OSError("sink down")

    script = "for i in range(300): print(f'loss={i}')"
    outcome, _ = run(
        tmp_path, script, failing, observe=lambda lines: seen.extend(t for _, t in lines),
        sink_drain_timeout=0.2,
    )  # fmt: skip
    assert outcome.exit_code == 0 and outcome.lines == 0
    assert seen == [f"loss={i}" for i in range(300)]


def test_exit_code_is_reported(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "raise SystemExit(3)")
    assert (outcome.reason, outcome.exit_code, outcome.describe()) == (EXITED, 3, "exited with 3")


@pytest.mark.slow
def test_partial_line_is_sent_while_the_task_still_runs(tmp_path: Path) -> None:
    # The task writes a prompt with no newline and waits for the sink to have seen it.
    flag = tmp_path / "seen"
    script = (
        "import os, sys, time\n"
        "sys.stdout.write('loading weights... '); sys.stdout.flush()\n"
        "deadline = time.time() + 60\n"
        f"while not os.path.exists({str(flag)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print('ok' if os.path.exists(" + repr(str(flag)) + ") else 'never seen')\n"
    )
    collector = Collector()

    def sink(batch: Sequence[Line]) -> None:
        collector(batch)
        if any("loading weights" in text for _, text in batch):
            flag.touch()

    outcome, _ = run(tmp_path, script, sink)
    assert outcome.exit_code == 0
    assert collector.texts == ["loading weights... ", "ok"]


def test_progress_bars_collapse_and_bad_bytes_are_replaced(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'\\r 10%\\r 50%\\r100%\\n'); out.write(b'bad \\xff byte\\n')\n"
    )
    _, sink = run(tmp_path, script)
    assert sink.texts == ["100%", "bad \ufffd byte"]


def test_a_burst_of_output_into_a_slow_sink_loses_no_line(tmp_path: Path) -> None:
    """The buffer fills: the reader stops reading, the task waits on its writes, and every
    line gets through (the buffer once dropped its oldest batches here)."""
    script = (
        "import sys\n"
        "for i in range(25_000):\n"  # about 5 MB, twenty times the buffer
        "    sys.stdout.write(f'{i:06d} ' + 'x' * 192 + '\\n')\n"
        "sys.stdout.write('last line\\n'); sys.stdout.flush()\n"
    )
    collector = Collector()
    sizes: list[int] = []

    def slow_sink(batch: Sequence[Line]) -> None:
        time.sleep(0.002)
        sizes.append(sum(len(text) for _, text in batch))
        collector(batch)

    outcome, _ = run(tmp_path, script, slow_sink, max_buffer_bytes=256 * 1024)
    assert outcome.exit_code == 0
    assert outcome.dropped_lines == 0 and outcome.lines == 25_001
    assert collector.texts == [f"{i:06d} " + "x" * 192 for i in range(25_000)] + ["last line"]


def test_a_task_waiting_on_a_full_buffer_can_still_be_canceled(tmp_path: Path) -> None:
    stuck = threading.Event()

    def stuck_sink(batch: Sequence[Line]) -> None:
        stuck.wait(30)

    script = "import sys\nwhile True: sys.stdout.write('x' * 199 + '\\n')\n"
    started = time.monotonic()
    outcome, _ = run(
        tmp_path,
        script,
        stuck_sink,
        max_buffer_bytes=64 * 1024,
        should_stop=lambda: time.monotonic() - started > 1.0,
        sink_drain_timeout=0.5,
    )
    stuck.set()
    assert outcome.reason == CANCELED
    assert time.monotonic() - started < 20
    assert outcome.dropped_lines > 0


def test_lines_gather_into_batches_while_the_sink_is_busy(tmp_path: Path) -> None:
    collector = Collector()

    def busy_sink(batch: Sequence[Line]) -> None:
        time.sleep(0.05)
        collector(batch)

    outcome, _ = run(tmp_path, "for i in range(3000): print(i)", busy_sink)
    assert collector.texts == [str(i) for i in range(3000)]
    assert len(collector.batches) < 100
    assert outcome.lines == 3000


def test_a_sink_that_fails_once_loses_nothing(tmp_path: Path) -> None:
    collector = Collector()
    failures = [RuntimeError("redis away")]

    def flaky(batch: Sequence[Line]) -> None:
        if failures:
            raise failures.pop()
        collector(batch)

    outcome, _ = run(tmp_path, "for i in range(5): print(i)", flaky)
    assert collector.texts == ["0", "1", "2", "3", "4"]
    assert outcome.sink_errors == 1 and outcome.last_sink_error == "RuntimeError: redis away"
    assert outcome.dropped_lines == 0


@pytest.mark.slow
def test_a_sink_that_always_fails_does_not_hang_the_run(tmp_path: Path) -> None:
    def broken(batch: Sequence[Line]) -> None:
        raise ConnectionError("down")

    outcome, _ = run(tmp_path, "print('hello')", broken, sink_drain_timeout=0.5)
    assert outcome.exit_code == 0
    assert outcome.sink_errors >= 1 and outcome.lines == 0 and outcome.dropped_lines == 1


TRAP = (
    "import signal, subprocess, sys, time\n"
    "def on_term(signum, frame):\n"
    "    print('got SIGTERM', flush=True)\n"
    "    sys.exit(3)\n"
    "signal.signal(signal.SIGTERM, {handler})\n"
    "child = subprocess.Popen(['sleep', '300'])\n"
    "print('ready', child.pid, flush=True)\n"
    "time.sleep(300)\n"
)


def test_cancel_sends_sigterm_to_a_task_that_traps_it(tmp_path: Path) -> None:
    collector = Collector()
    ready = collector.when("ready")
    outcome, _ = run(tmp_path, TRAP.format(handler="on_term"), collector, should_stop=ready.is_set)
    assert (outcome.reason, outcome.exit_code, outcome.killed) == (CANCELED, 3, False)
    assert "got SIGTERM" in collector.texts
    grandchild = int(collector.texts[0].split()[1])
    assert gone(grandchild)
    assert outcome.describe() == "canceled"


@pytest.mark.slow
def test_a_task_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    collector = Collector()
    ready = collector.when("ready")
    script = TRAP.format(handler="signal.SIG_IGN")
    outcome, _ = run(tmp_path, script, collector, should_stop=ready.is_set, grace=0.5)
    assert (outcome.reason, outcome.exit_code, outcome.killed) == (CANCELED, -9, True)
    assert "got SIGTERM" not in collector.texts
    assert gone(int(collector.texts[0].split()[1]))


def test_timeout_stops_the_task(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "import time; time.sleep(300)", timeout=0.3)
    assert (outcome.reason, outcome.exit_code) == (TIMED_OUT, -15)
    assert outcome.describe() == "timed out after 0.3s"


def test_children_left_holding_the_output_are_killed(tmp_path: Path) -> None:
    script = "import subprocess\nchild = subprocess.Popen(['sleep', '300'])\nprint(child.pid)\n"
    outcome, sink = run(tmp_path, script, drain_timeout=0.3)
    assert (outcome.reason, outcome.exit_code) == (EXITED, 0)
    assert gone(int(sink.texts[0]))


def test_a_failing_stop_check_does_not_stop_the_task(tmp_path: Path) -> None:
    def check() -> bool:
        raise ConnectionError("redis away")

    outcome, sink = run(tmp_path, "import time; time.sleep(0.3); print('done')", should_stop=check)
    assert (outcome.reason, sink.texts) == (EXITED, ["done"])


def test_a_supervision_failure_kills_the_task(tmp_path: Path) -> None:
    class Broken(LocalProcess):
        def wait(self, timeout: float | None = None) -> int | None:
            if self.poll() is None and threading.current_thread() is threading.main_thread():
                raise RuntimeError("engine gone")
            return super().wait(timeout)

    process = Broken([PY, "-c", "import time; time.sleep(300)"], cwd=tmp_path, env={})
    with pytest.raises(RuntimeError, match="engine gone"):
        supervise(process, Collector(), should_stop=lambda: False, timeout=None, grace=1)
    assert LocalProcess.wait(process, 30) == -9
