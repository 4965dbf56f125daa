"""Supervise a started task: stream its output to the log, stop it on cancel or timeout.

Three threads share the work so that nothing the log's consumer does can stall the task:

- a reader drains the process's output as fast as it comes (the task never blocks on a full
  pipe) and turns it into batches of timestamped lines (:mod:`overnight.agent.run.logbatch`):
  sent at once while the sink is idle, so the first lines show without delay, and gathered
  for at most ``flush_interval`` seconds or ``flush_bytes`` while it is busy;
- a sender hands the batches to the sink, retrying with backoff when it raises;
- the caller's thread watches the process, polls ``should_stop`` every ``poll_interval``
  seconds, enforces the timeout and sends the stop signals.

Between the reader and the sender sits a bounded buffer (``max_buffer_bytes``). When the sink
is slower than the task and the buffer is full, the reader stops reading until the sender made
room: the pipe fills and the task waits on its writes, so a burst of output loses no line (the
agent's sink is quick whatever Redis does: it spills to disk through an outage). Lines are lost
only when the sink still holds them after the run's end plus ``sink_drain_timeout``;
``RunOutcome.dropped_lines`` counts them. The sink is called from the sender thread.

``observe``, when given, sees every batch of output in order on the reader's thread, whatever
becomes of it in the buffer (the run's metrics are read there: :mod:`overnight.agent.run.metricfeed`);
it must be quick and must not raise.
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Sequence

from overnight.agent.environments.base import Process
from overnight.agent.run.failures import TAIL_LINES, describe_failure
from overnight.agent.run.logbatch import Line, LogBatcher, Notice
from overnight.units import format_duration

Sink = Callable[[Sequence[Line]], None]
Observer = Callable[[Sequence[Line]], None]

EXITED = "exited"
CANCELED = "canceled"
TIMED_OUT = "timed_out"

KILL_WAIT = 15.0  # seconds to wait for a process to die after SIGKILL before giving up on it


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """How a supervised task ended, and what happened to its output."""

    exit_code: int | None  # negative: ended by that signal; None: it could not be reaped
    reason: str  # EXITED, CANCELED or TIMED_OUT
    duration: float  # seconds from supervision start to the process's end
    started: float  # unix time
    ended: float  # unix time
    timeout: float | None = None
    killed: bool = False  # SIGKILL was sent because the grace period ran out
    lines: int = 0  # output lines the sink accepted
    dropped_lines: int = 0  # lines lost because the sink was too slow or kept failing
    sink_errors: int = 0  # calls to the sink that raised
    last_sink_error: str = ""
    tail: tuple[str, ...] = ()  # the last lines of its output

    def describe(self) -> str:
        """A one-line account for the task's record: "timed out after 8h", "exited with 1: ValueError:
        bad shape" (the line of its output that says why: :mod:`overnight.agent.run.failures`)."""
        if self.reason == TIMED_OUT:
            return f"timed out after {format_duration(self.timeout or self.duration)}"
        if self.reason == CANCELED:
            return "canceled" + (" (killed after the grace period)" if self.killed else "")
        how = self.how()
        return describe_failure(how, self.tail) if self.exit_code != 0 else how

    def how(self) -> str:
        """How the process ended, without the why: "killed by SIGTERM", "exited with 1"."""
        if self.exit_code is None:
            return "ended without an exit code"
        if self.exit_code < 0:
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = f"signal {-self.exit_code}"
            return f"killed by {name}"
        return f"exited with {self.exit_code}"


def supervise(
    process: Process,
    sink: Sink,
    *,
    should_stop: Callable[[], bool],
    timeout: float | None,
    grace: float,
    flush_interval: float = 0.5,
    flush_bytes: int = 64 * 1024,
    poll_interval: float = 0.1,
    max_buffer_bytes: int = 16 * 1024 * 1024,
    drain_timeout: float = 2.0,
    sink_drain_timeout: float = 10.0,
    observe: Observer | None = None,
) -> RunOutcome:
    """Run ``process`` to its end, streaming its output to ``sink`` in batches.

    On ``should_stop()`` or after ``timeout`` seconds the whole task gets SIGTERM, and SIGKILL
    ``grace`` seconds later if it is still running. When the command exits but processes it
    left behind keep its output open for ``drain_timeout`` seconds, they are killed. The sink
    gets ``sink_drain_timeout`` seconds after the end to take what is still buffered.
    """
    started, clock0 = time.time(), time.monotonic()
    outbox = _Outbox(sink, max_buffer_bytes)
    batcher = LogBatcher(flush_interval=flush_interval, flush_bytes=flush_bytes)
    pump = _Pump(batcher, outbox, observe)
    sender = threading.Thread(target=outbox.run, name="overnight-log-sender", daemon=True)
    reader = threading.Thread(
        target=pump.read_all, args=(process,), name="overnight-log-reader", daemon=True
    )
    sender.start()
    reader.start()

    try:
        code, reason, killed = _watch(
            process, pump, should_stop, timeout, grace, poll_interval, clock0
        )
    except BaseException:
        process.kill()  # never leave a task running unsupervised
        pump.close()
        outbox.finish(sender, 1.0)
        raise
    ended, duration = time.time(), time.monotonic() - clock0

    reader.join(drain_timeout)
    while reader.is_alive() and pump.waiting and outbox.progressed(sink_drain_timeout):
        reader.join(0.1)  # output the task wrote before its end, waiting for the sink
    if reader.is_alive():
        process.kill()  # children that outlived the command hold its output open
        reader.join(drain_timeout)
    pump.close()
    outbox.finish(sender, sink_drain_timeout)
    return RunOutcome(
        exit_code=code,
        reason=reason,
        duration=duration,
        started=started,
        ended=ended,
        timeout=timeout,
        killed=killed,
        lines=outbox.sent,
        dropped_lines=outbox.dropped,
        sink_errors=outbox.errors,
        last_sink_error=outbox.last_error,
        tail=tuple(pump.tail),
    )


def _watch(
    process: Process,
    pump: _Pump,
    should_stop: Callable[[], bool],
    timeout: float | None,
    grace: float,
    poll_interval: float,
    clock0: float,
) -> tuple[int | None, str, bool]:
    """Wait for the process to end, stopping it when asked or when its time is up.

    Returns its exit code, why it ended and whether SIGKILL was needed.
    """
    reason, stop_at, kill_at = EXITED, None, None
    while True:
        step = poll_interval
        deadline = pump.deadline()
        if deadline is not None:
            step = max(0.0, min(step, deadline - time.time()))
        code = process.wait(step)
        if code is not None:
            return code, reason, kill_at is not None
        pump.tick()
        now = time.monotonic()
        if stop_at is None:
            if _asked_to_stop(should_stop):
                reason = CANCELED
            elif timeout is not None and now - clock0 >= timeout:
                reason = TIMED_OUT
            if reason != EXITED:
                stop_at = now
                process.terminate()
        elif kill_at is None and now - stop_at >= grace:
            kill_at = now
            process.kill()
        elif kill_at is not None and now - kill_at >= KILL_WAIT:
            return None, reason, True  # SIGKILL did not end it (stuck in the kernel): give up


def _asked_to_stop(should_stop: Callable[[], bool]) -> bool:
    try:
        return bool(should_stop())
    except Exception:
        return False  # a failing check (Redis away) must not stop or crash the task


class _Pump:
    """The batcher behind a lock: the reader feeds it, the supervisor's ticks flush it."""

    def __init__(self, batcher: LogBatcher, outbox: _Outbox, observe: Observer | None) -> None:
        self._batcher = batcher
        self._outbox = outbox
        self._observe = observe
        self._lock = threading.Lock()
        self._closed = False
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    @property
    def waiting(self) -> bool:
        """Whether the reader waits for room in the buffer (not for the task's output)."""
        return self._outbox.full

    def read_all(self, process: Process) -> None:
        try:
            for chunk in process.output():
                self.feed(chunk)
                self._outbox.wait_room()  # back-pressure: the pipe fills, the task waits
        except Exception as exc:
            now = time.time()
            with self._lock:
                if not self._closed:
                    self._outbox.put(
                        [(now, Notice(f"[overnight] reading the task's output failed: {exc}"))]
                    )

    def feed(self, chunk: bytes) -> None:
        now = time.time()
        with self._lock:
            if self._closed:
                self._outbox.lose(chunk.count(b"\n"))
                return
            self._batcher.feed(chunk, now)
            if self._batcher.due(now):
                self._send(self._batcher.flush(now))
            elif self._batcher.has_lines and self._outbox.idle:
                # Nothing in flight: send complete lines now; batches form while the sink works.
                self._send(self._batcher.flush(now, partial=False))

    def deadline(self) -> float | None:
        with self._lock:
            return self._batcher.deadline()

    def tick(self) -> None:
        now = time.time()
        with self._lock:
            if not self._closed and self._batcher.due(now):
                self._send(self._batcher.flush(now))

    def close(self) -> None:
        now = time.time()
        with self._lock:
            self._closed = True
            self._send(self._batcher.close(now))

    def _send(self, lines: list[Line]) -> None:
        self.tail.extend(text for _, text in lines)
        if self._observe is not None and lines:
            self._observe(lines)
        self._outbox.put(lines)


class _Outbox:
    """A bounded buffer of batches, emptied into the sink by the sender thread."""

    def __init__(self, sink: Sink, max_bytes: int) -> None:
        self._sink = sink
        self._max = max_bytes
        self._cond = threading.Condition()
        self._queue: collections.deque[list[Line]] = collections.deque()
        self._size = 0
        self._closing = False
        self._progress = time.monotonic()  # when a batch last went out
        self._busy = False
        self._abandoned = threading.Event()
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being delivered."""
        with self._cond:
            return not self._queue and not self._busy

    @property
    def full(self) -> bool:
        with self._cond:
            return self._size >= self._max

    def put(self, batch: list[Line]) -> None:
        """Queue a batch; never waits (the buffer passes its bound by at most a batch: the
        reader, not this, waits for room)."""
        if not batch:
            return
        with self._cond:
            self._queue.append(batch)
            self._size += _size(batch)
            self._cond.notify_all()

    def wait_room(self) -> None:
        """Wait while the buffer is full, until the sender empties it or the run is over."""
        with self._cond:
            while self._size >= self._max and not self._closing and not self._abandoned.is_set():
                self._cond.wait(0.5)

    def progressed(self, within: float) -> bool:
        """Whether a batch went out in the last ``within`` seconds."""
        with self._cond:
            return time.monotonic() - self._progress < within

    def lose(self, lines: int) -> None:
        with self._cond:
            self.dropped += lines

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abandoned.is_set():
                    return
                batch = self._queue.popleft()
                self._busy = True
                self._size -= _size(batch)
                self._cond.notify_all()
            delivered = self._deliver(batch, len(batch))
            with self._cond:
                self._busy = False
                self._progress = time.monotonic()
            if not delivered:
                return

    def _deliver(self, batch: list[Line], lines: int) -> bool:
        delay = 0.1
        while True:
            try:
                self._sink(batch)
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._abandoned.wait(delay):
                    self.dropped += lines
                    return False
                delay = min(delay * 2, 2.0)
            else:
                self.sent += lines
                return not self._abandoned.is_set()

    def finish(self, sender: threading.Thread, timeout: float) -> None:
        """Let the sender empty the buffer for up to ``timeout`` seconds, then give up on it."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        sender.join(timeout)
        if sender.is_alive():
            self._abandoned.set()
            with self._cond:
                self.dropped += sum(len(b) for b in self._queue)
                self._queue.clear()
                self._cond.notify_all()
            sender.join(0.5)


def _size(batch: list[Line]) -> int:
    return sum(len(text) + 1 for _, text in batch)
