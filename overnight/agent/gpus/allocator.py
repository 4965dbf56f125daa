"""Which task holds which of an agent's GPUs (and CPU slots), with head-of-line reservation.

The daemon keeps one :class:`Allocator` per agent, shared by its task threads. For the task at the
head of its queue it calls :meth:`Allocator.plan`:

- ``Verdict.GRANTED``: ``decision.gpu_ids`` are the task's until :meth:`Allocator.release`.
- ``Verdict.WAIT``: the task now holds a reservation. GPUs that free up are kept for it: no later
  request is granted while that would leave fewer usable GPUs than the reserved tasks ahead of it
  need, so a 4-GPU task is not starved by a stream of 1-GPU tasks (unless processes overnight did
  not start hold so many GPUs that the reservation cannot be met: then smaller tasks go on).
  :meth:`Allocator.ready` says, cheaply, when ``plan`` would now grant it and
  :meth:`Allocator.has_room` whether any request could be granted; :meth:`Allocator.wait` returns
  on a release (or after its timeout: foreign processes can go away without an event). Then
  ``plan`` again with the same task id; it keeps its place. :meth:`Allocator.withdraw` drops
  the reservation (the task was canceled or handed back). A reservation that ``plan`` has not
  renewed for ``reservation_ttl`` seconds lapses, so a task pushed back to its queue and taken by
  another agent does not hold this agent's GPUs back for ever.
- ``Verdict.TOO_LARGE``: the agent can never run it (more GPUs than it offers, or a CPU-only task
  on an agent with no CPU slots); hand the task back and flag it, ``decision.reason`` says why.

A task that asks for 0 GPUs takes one of ``cpu_slots``; GPU tasks take no CPU slot. A task found
still running after an agent restart books the very GPUs it runs on with
:meth:`Allocator.acquire_ids`. GPU ids are the
strings from :func:`~overnight.agent.gpus.inventory.parse_gpu_list`. With an inventory, GPUs on which
processes overnight did not start hold more than ``foreign_threshold_mb`` are not handed out;
``own_pids()`` (supplied by the daemon: every pid of every task it runs, the containers' host pids
included) tells overnight's processes apart, and :meth:`Allocator.unavailable` says why a GPU is
held back (for ``overnight workers``). All methods are thread-safe; ``own_pids`` is called with the
allocator's lock held, so it must not call back into the allocator.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from overnight.agent.gpus.inventory import GPUInventory
from overnight.errors import GPUError

DEFAULT_FOREIGN_THRESHOLD_MB = 1024.0
DEFAULT_RESERVATION_TTL = 60.0


class Verdict(str, enum.Enum):
    """The outcome of :meth:`Allocator.plan`."""

    GRANTED = "granted"
    WAIT = "wait"
    TOO_LARGE = "too_large"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What :meth:`Allocator.plan` decided for one task, and why (one line for logs and notes)."""

    verdict: Verdict
    gpu_ids: tuple[str, ...] = ()
    reason: str = ""

    @property
    def granted(self) -> bool:
        return self.verdict is Verdict.GRANTED


def _nothing() -> frozenset[int]:
    return frozenset()


def _quiet(message: str) -> None:
    pass


def _units(count: int) -> int:
    """What a request takes from its pool: its GPUs, or one CPU slot."""
    return count or 1


class Allocator:
    """Hands out GPUs and CPU slots to task ids; never the same GPU to two tasks."""

    def __init__(
        self,
        gpu_ids: Sequence[str],
        cpu_slots: int = 1,
        *,
        inventory: GPUInventory | None = None,
        foreign_threshold_mb: float = DEFAULT_FOREIGN_THRESHOLD_MB,
        own_pids: Callable[[], Collection[int]] = _nothing,
        warn: Callable[[str], None] = _quiet,
        reservation_ttl: float | None = DEFAULT_RESERVATION_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(set(gpu_ids)) != len(gpu_ids):
            raise GPUError(f"GPU ids must be distinct, got {', '.join(gpu_ids)}")
        if cpu_slots < 0:
            raise GPUError(f"cpu_slots must be 0 or more, got {cpu_slots}")
        self.gpu_ids = tuple(gpu_ids)
        self.cpu_slots = cpu_slots
        self._inventory = inventory
        self._threshold = foreign_threshold_mb
        self._own_pids = own_pids
        self._warn = warn
        self._changed = threading.Condition(threading.RLock())
        self._gpus: dict[str, tuple[str, ...]] = {}  # task id -> GPUs it holds
        self._cpu: set[str] = set()  # task ids holding a CPU slot
        self._reserved: dict[str, int] = {}  # task id -> GPUs wanted, in reservation order
        self._renewed: dict[str, float] = {}  # task id -> when plan() or reserve() last saw it
        self._ttl = reservation_ttl
        self._clock = clock
        self._foreign: dict[str, str] = {}  # GPU id -> why it is held back
        self._inventory_failed = False

    # -- asking --------------------------------------------------------------------------------

    def plan(self, task_id: str, count: int) -> Decision:
        """Grant ``count`` GPUs (0: a CPU slot) now, or reserve them, or refuse for good."""
        with self._changed:
            too_large = self._too_large(count)
            if too_large:
                self._unreserve(task_id)
                return Decision(Verdict.TOO_LARGE, reason=too_large)
            granted = self.try_acquire(task_id, count)
            if granted is not None:
                return Decision(Verdict.GRANTED, granted, f"got {self._what(count, granted)}")
            self._hold(task_id, count)
            return Decision(Verdict.WAIT, reason=self._why_waiting(task_id, count))

    def try_acquire(self, task_id: str, count: int) -> tuple[str, ...] | None:
        """The GPUs granted to ``task_id`` (``()`` for a CPU slot), or None when not now.

        Reservations ahead of ``task_id`` are honoured; on success its own reservation ends.
        """
        if count < 0:
            raise GPUError(f"a task cannot ask for {count} GPUs")
        with self._changed:
            if task_id in self._gpus or task_id in self._cpu:
                raise GPUError(f"task {task_id} already holds its resources")
            self._prune()
            if count:
                self._refresh()
            if not self._grantable(task_id, count):
                return None
            self._unreserve(task_id)
            if count == 0:
                self._cpu.add(task_id)
                return ()
            granted = self._free()[:count]
            self._gpus[task_id] = granted
            return granted

    def acquire_ids(self, task_id: str, ids: Sequence[str]) -> tuple[str, ...]:
        """Book exactly ``ids`` for ``task_id``: a task found running after an agent restart.

        The task already runs on these GPUs, so neither foreign use nor reservations are asked.
        Ids this agent does not offer, or another task holds, are left out: the result is what
        was booked. No ids books a CPU slot, even beyond ``cpu_slots``.
        """
        with self._changed:
            if task_id in self._gpus or task_id in self._cpu:
                raise GPUError(f"task {task_id} already holds its resources")
            self._unreserve(task_id)
            if not ids:
                self._cpu.add(task_id)
                return ()
            held = {gpu for gpus in self._gpus.values() for gpu in gpus}
            booked = tuple(g for g in dict.fromkeys(ids) if g in self.gpu_ids and g not in held)
            self._gpus[task_id] = booked
            return booked

    def reserve(self, task_id: str, count: int) -> None:
        """Put ``task_id`` in line for ``count`` GPUs without trying to take them now."""
        with self._changed:
            too_large = self._too_large(count)
            if too_large:
                raise GPUError(too_large)
            self._hold(task_id, count)

    def withdraw(self, task_id: str) -> None:
        """Drop ``task_id``'s reservation, if any; what it waited for goes to the next in line."""
        with self._changed:
            if self._unreserve(task_id):
                self._changed.notify_all()

    def release(self, task_id: str) -> None:
        """Give back everything ``task_id`` holds or reserved; a no-op for an unknown task."""
        with self._changed:
            held = self._gpus.pop(task_id, None)
            slot = task_id in self._cpu
            self._cpu.discard(task_id)
            reserved = self._unreserve(task_id)
            if held is not None or slot or reserved:
                self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until something is released or withdrawn (True) or ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait(timeout)

    # -- reporting -----------------------------------------------------------------------------

    def ready(self, task_id: str) -> bool:
        """Whether :meth:`plan` would grant the waiting ``task_id`` now (True when not waiting).

        Judged on the last GPU reading, so it is cheap enough to ask in a loop.
        """
        with self._changed:
            self._prune()
            count = self._reserved.get(task_id)
            return count is None or self._grantable(task_id, count)

    def has_room(self) -> bool:
        """Whether some request could be granted now: a waiting task's, or a newcomer's.

        A newcomer asks for one GPU or a CPU slot and queues behind every reservation, so while
        a large task waits, freed GPUs do not make room for small ones. Judged on the last GPU
        reading (refreshed by ``plan``, ``describe`` and ``unavailable``).
        """
        with self._changed:
            self._prune()
            if any(self._grantable(t, n) for t, n in self._reserved.items()):
                return True
            return self._grantable("", 0) or self._grantable("", 1)

    def offers(self, count: int) -> bool:
        """Whether this agent could ever run a task asking for ``count`` GPUs."""
        return not self._too_large(count)

    def unavailable(self) -> dict[str, str]:
        """GPUs held back because other processes use them, with the reason (refreshed now)."""
        with self._changed:
            self._refresh()
            return dict(self._foreign)

    def holders(self) -> dict[str, tuple[str, ...]]:
        """Task id -> the GPUs it holds (``()`` for a CPU slot)."""
        with self._changed:
            held = dict(self._gpus)
            held.update({task: () for task in self._cpu})
            return held

    def reservations(self) -> list[tuple[str, int]]:
        """Waiting tasks and the GPUs they wait for, first in line first."""
        with self._changed:
            self._prune()
            return list(self._reserved.items())

    def free(self) -> tuple[str, ...]:
        """GPUs that are neither held nor held back, as of the last refresh."""
        with self._changed:
            return self._free()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for the agent's registry entry (``AgentInfo.extra``)."""
        with self._changed:
            self._refresh()
            self._prune()
            owner = {gpu: task for task, gpus in self._gpus.items() for gpu in gpus}
            return {
                "gpus": {
                    gpu: (
                        {"task": owner[gpu]}
                        if gpu in owner
                        else {"unavailable": self._foreign[gpu]}
                        if gpu in self._foreign
                        else {}
                    )
                    for gpu in self.gpu_ids
                },
                "cpu_slots": self.cpu_slots,
                "cpu_tasks": sorted(self._cpu),
                "reserved": [{"task": t, "gpus": n} for t, n in self._reserved.items()],
            }

    # -- internals -----------------------------------------------------------------------------

    def _hold(self, task_id: str, count: int) -> None:
        self._prune()
        self._reserved.setdefault(task_id, count)
        self._renewed[task_id] = self._clock()

    def _unreserve(self, task_id: str) -> bool:
        self._renewed.pop(task_id, None)
        return self._reserved.pop(task_id, None) is not None

    def _prune(self) -> None:
        """Forget reservations nobody renewed: their task was probably taken by another agent."""
        if self._ttl is None:
            return
        oldest = self._clock() - self._ttl
        for task_id in [t for t, at in self._renewed.items() if at < oldest]:
            self._unreserve(task_id)
            self._changed.notify_all()

    def _too_large(self, count: int) -> str:
        if count == 0 and self.cpu_slots == 0:
            return "this agent runs no CPU-only tasks (its --cpu-slots is 0)"
        if count > len(self.gpu_ids):
            return f"the task needs {count} GPUs; this agent offers {len(self.gpu_ids)}"
        return ""

    def _free(self) -> tuple[str, ...]:
        held = {gpu for gpus in self._gpus.values() for gpu in gpus}
        return tuple(g for g in self.gpu_ids if g not in held and g not in self._foreign)

    def _grantable(self, task_id: str, count: int) -> bool:
        """Whether ``task_id`` (``""``: a newcomer, behind every reservation) could have
        ``count`` GPUs (0: a CPU slot) now, on the last GPU reading."""
        if self._too_large(count):
            return False
        available = self.cpu_slots - len(self._cpu) if count == 0 else len(self._free())
        return available - self._needed_ahead(task_id, count) >= _units(count)

    def _needed_ahead(self, task_id: str, count: int) -> int:
        """GPUs (or slots) that reservations ahead of ``task_id`` in its pool keep from it.

        A reservation that other processes' GPU use makes impossible keeps nothing back: the
        agent should not sit idle on a foreign process's behalf.
        """
        possible = len(self.gpu_ids) - len(self._foreign)
        needed = 0
        for other, want in self._reserved.items():
            if other == task_id:
                break
            if (want == 0) == (count == 0) and want <= possible:
                needed += _units(want)
        return needed

    def _refresh(self) -> None:
        if self._inventory is None or not self.gpu_ids:
            return
        try:
            devices = {d.id: d for d in self._inventory.devices()}
        except GPUError as exc:
            if not self._inventory_failed:
                self._warn(f"foreign GPU use is not checked any more: {exc}")
            self._inventory_failed = True
            self._foreign = {}
            return
        self._inventory_failed = False
        # Finding a task's pids can mean asking the Docker engine: only when some GPU has users.
        busy = any(devices[g].processes for g in self.gpu_ids if g in devices)
        own = self._own_pids() if busy else frozenset()
        foreign: dict[str, str] = {}
        held = {g for ids in self._gpus.values() for g in ids}  # a task of ours uses them
        for gpu in self.gpu_ids:
            dev = devices.get(gpu)
            if dev is None:
                foreign[gpu] = "GPU is not present any more"
                continue
            used = dev.foreign_memory_mb(own, ours_on_it=gpu in held)
            if used > self._threshold:
                pids = ", ".join(str(p.pid) for p in dev.foreign_processes(own))
                who = f"pid {pids}" if pids else "processes NVML does not list"
                foreign[gpu] = (
                    f"{used:.0f} MB in use by processes overnight did not start ({who}); "
                    f"threshold {self._threshold:.0f} MB"
                )
        self._foreign = foreign

    def _what(self, count: int, granted: tuple[str, ...]) -> str:
        return "a CPU slot" if count == 0 else f"GPU {', '.join(granted)}"

    def _why_waiting(self, task_id: str, count: int) -> str:
        if count == 0:
            return f"waits for a CPU slot: all {self.cpu_slots} in use"
        held = sum(len(g) for g in self._gpus.values())
        parts = [f"{len(self._free())} free", f"{held} held by running tasks"]
        if self._foreign:
            parts.append(f"{len(self._foreign)} in use by other processes")
            if count > len(self.gpu_ids) - len(self._foreign):
                parts.append("other tasks go first until those processes end")
        ahead = self._needed_ahead(task_id, count)
        if ahead:
            parts.append(f"{ahead} reserved for tasks ahead")
        return f"waits for {count} GPUs: {', '.join(parts)}"
