from __future__ import annotations

import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from overnight.agent.allocator import Allocator, Verdict
from overnight.agent.gpus import FakeInventory, GPUProcess
from overnight.errors import GPUError

FOUR = ("0", "1", "2", "3")


def test_grants_distinct_gpus_and_releases_them() -> None:
    alloc = Allocator(FOUR)
    a = alloc.try_acquire("a", 2)
    b = alloc.try_acquire("b", 2)
    assert a == ("0", "1")
    assert b == ("2", "3")
    assert alloc.try_acquire("c", 1) is None
    alloc.release("a")
    assert alloc.try_acquire("c", 1) == ("0",)
    assert alloc.holders() == {"b": ("2", "3"), "c": ("0",)}
    alloc.release("unknown")  # a no-op


def test_cpu_tasks_use_cpu_slots_not_gpus() -> None:
    alloc = Allocator(("0",), cpu_slots=2)
    assert alloc.try_acquire("g", 1) == ("0",)
    assert alloc.try_acquire("c1", 0) == ()
    assert alloc.try_acquire("c2", 0) == ()
    assert alloc.try_acquire("c3", 0) is None
    decision = alloc.plan("c3", 0)
    assert decision.verdict is Verdict.WAIT
    assert "CPU slot" in decision.reason
    alloc.release("c1")
    assert alloc.plan("c3", 0).granted


def test_holding_twice_is_a_bug_reported_as_gpu_error() -> None:
    alloc = Allocator(FOUR)
    alloc.try_acquire("a", 1)
    with pytest.raises(GPUError, match="already holds"):
        alloc.try_acquire("a", 1)
    with pytest.raises(GPUError, match="-1 GPUs"):
        alloc.try_acquire("b", -1)


def test_too_large_requests_are_reported_not_reserved() -> None:
    alloc = Allocator(FOUR, cpu_slots=0)
    decision = alloc.plan("big", 8)
    assert decision.verdict is Verdict.TOO_LARGE
    assert decision.reason == "the task needs 8 GPUs; this agent offers 4"
    assert alloc.reservations() == []
    assert not alloc.offers(8)
    assert alloc.offers(4)
    cpu = alloc.plan("cpu", 0)
    assert cpu.verdict is Verdict.TOO_LARGE
    assert "--cpu-slots" in cpu.reason
    with pytest.raises(GPUError, match="offers 4"):
        alloc.reserve("big", 5)
    assert Allocator((), cpu_slots=1).plan("x", 1).reason == (
        "the task needs 1 GPUs; this agent offers 0"
    )


def test_a_four_gpu_head_is_not_starved_by_one_gpu_tasks() -> None:
    alloc = Allocator(FOUR)
    for i in range(4):
        assert alloc.plan(f"small{i}", 1).granted
    head = alloc.plan("big", 4)
    assert head.verdict is Verdict.WAIT
    assert head.reason == "waits for 4 GPUs: 0 free, 4 held by running tasks"
    # A stream of 1-GPU tasks: each time one finishes, another one asks first.
    for i in range(4):
        alloc.release(f"small{i}")
        assert alloc.plan(f"late{i}", 1).verdict is Verdict.WAIT
        if i < 3:
            assert alloc.plan("big", 4).verdict is Verdict.WAIT
    granted = alloc.plan("big", 4)
    assert granted.granted
    assert granted.gpu_ids == FOUR
    # The late tasks kept their order behind the head.
    assert [t for t, _ in alloc.reservations()] == ["late0", "late1", "late2", "late3"]


def test_requests_beyond_the_reserved_need_still_run() -> None:
    alloc = Allocator(FOUR)
    alloc.try_acquire("a", 2)
    assert alloc.plan("head", 3).verdict is Verdict.WAIT
    # 2 free, head needs 3: nothing can be spared
    assert alloc.try_acquire("b", 1) is None
    alloc.release("a")
    # 4 free, head needs 3: one GPU is spare
    assert alloc.try_acquire("b", 1) == ("0",)
    assert alloc.try_acquire("c", 1) is None
    assert alloc.plan("head", 3).gpu_ids == ("1", "2", "3")


def test_withdrawn_reservation_frees_the_line() -> None:
    alloc = Allocator(FOUR)
    alloc.try_acquire("a", 1)
    alloc.plan("head", 4)
    assert alloc.try_acquire("b", 1) is None
    alloc.withdraw("head")
    assert alloc.try_acquire("b", 1) == ("1",)


def test_a_reservation_nobody_renews_lapses() -> None:
    now = [0.0]
    alloc = Allocator(FOUR, reservation_ttl=60, clock=lambda: now[0])
    alloc.try_acquire("a", 1)
    assert alloc.plan("big", 4).verdict is Verdict.WAIT
    now[0] = 50.0
    assert alloc.plan("big", 4).verdict is Verdict.WAIT  # renewed
    now[0] = 100.0
    assert alloc.try_acquire("b", 1) is None
    # the big task was taken by another agent: this one never asks again
    now[0] = 111.0
    assert alloc.try_acquire("b", 1) == ("1",)
    assert alloc.reservations() == []


def test_cpu_reservation_keeps_its_place() -> None:
    alloc = Allocator(("0",), cpu_slots=1)
    alloc.try_acquire("c1", 0)
    assert alloc.plan("c2", 0).verdict is Verdict.WAIT
    alloc.release("c1")
    assert alloc.try_acquire("c3", 0) is None
    assert alloc.try_acquire("g", 1) == ("0",)  # the GPU pool is not held back by CPU waiters
    assert alloc.plan("c2", 0).granted


def test_wait_wakes_on_release() -> None:
    alloc = Allocator(FOUR)
    alloc.try_acquire("a", 4)
    assert alloc.wait(0.01) is False
    woke: list[bool] = []
    ready = threading.Event()

    def waiter() -> None:
        with alloc._changed:  # take the lock first so the release cannot come before the wait
            ready.set()
            woke.append(alloc.wait(60))

    thread = threading.Thread(target=waiter)
    thread.start()
    ready.wait()
    alloc.release("a")
    thread.join()
    assert woke == [True]


def test_gpus_used_by_foreign_processes_are_not_handed_out() -> None:
    inv = FakeInventory.with_gpus(4)
    inv.set_processes(1, GPUProcess(999, 5000.0))
    inv.set_processes(2, GPUProcess(998, 200.0))  # below the threshold
    own: set[int] = set()
    alloc = Allocator(FOUR, inventory=inv, foreign_threshold_mb=1024, own_pids=lambda: own)
    assert alloc.unavailable() == {
        "1": "5000 MB in use by processes overnight did not start (pid 999); threshold 1024 MB"
    }
    assert alloc.try_acquire("a", 3) == ("0", "2", "3")
    assert alloc.describe()["gpus"]["1"] == {"unavailable": alloc.unavailable()["1"]}
    decision = alloc.plan("b", 1)
    assert decision.verdict is Verdict.WAIT
    assert "1 in use by other processes" in decision.reason
    # Our own processes are not foreign: a task's pid on GPU 1 does not hold it back.
    own.add(999)
    assert alloc.unavailable() == {}
    assert alloc.plan("b", 1).gpu_ids == ("1",)


def test_foreign_process_ending_makes_the_gpu_available_again() -> None:
    inv = FakeInventory.with_gpus(2)
    inv.set_processes(0, GPUProcess(4242, 3000.0))
    alloc = Allocator(("0", "1"), inventory=inv)
    assert alloc.try_acquire("a", 2) is None
    inv.set_processes(0)
    assert alloc.try_acquire("a", 2) == ("0", "1")


def test_foreign_use_that_blocks_the_head_does_not_idle_the_agent() -> None:
    inv = FakeInventory.with_gpus(4)
    inv.set_processes(3, GPUProcess(7, 8000.0))
    alloc = Allocator(FOUR, inventory=inv)
    head = alloc.plan("big", 4)
    assert head.verdict is Verdict.WAIT
    assert "other tasks go first" in head.reason
    assert alloc.try_acquire("small", 1) == ("0",)
    inv.set_processes(3)
    alloc.release("small")
    assert alloc.try_acquire("small2", 1) is None  # satisfiable again: the head is protected
    assert alloc.plan("big", 4).granted


def test_inventory_failure_warns_once_and_stops_holding_back() -> None:
    inv = FakeInventory.with_gpus(2)
    inv.set_processes(0, GPUProcess(7, 8000.0))
    warnings: list[str] = []
    alloc = Allocator(("0", "1"), inventory=inv, warn=warnings.append)
    assert alloc.try_acquire("a", 1) == ("1",)
    inv.fail = "NVML: GPU is lost"
    assert alloc.try_acquire("b", 1) == ("0",)
    alloc.release("b")
    alloc.try_acquire("b", 1)
    assert warnings == ["foreign GPU use is not checked any more: NVML: GPU is lost"]


def test_describe_is_json_ready() -> None:
    alloc = Allocator(("0", "1"), cpu_slots=2)
    alloc.try_acquire("a", 1)
    alloc.try_acquire("c", 0)
    alloc.plan("big", 2)
    assert alloc.describe() == {
        "gpus": {"0": {"task": "a"}, "1": {}},
        "cpu_slots": 2,
        "cpu_tasks": ["c"],
        "reserved": [{"task": "big", "gpus": 2}],
    }


def test_bad_construction() -> None:
    with pytest.raises(GPUError, match="distinct"):
        Allocator(("0", "0"))
    with pytest.raises(GPUError, match="cpu_slots"):
        Allocator(("0",), cpu_slots=-1)


class AllocationMachine(RuleBasedStateMachine):
    """Random plans, acquires, releases, withdrawals and foreign use on a 4-GPU agent."""

    def __init__(self) -> None:
        super().__init__()
        self.inv = FakeInventory.with_gpus(4)
        self.alloc = Allocator(FOUR, cpu_slots=2, inventory=self.inv, foreign_threshold_mb=100)
        self.counter = 0
        self.held: dict[str, tuple[str, ...]] = {}
        self.foreign: set[str] = set()

    def _check_grant(self, task: str, count: int, granted: tuple[str, ...] | None) -> None:
        if granted is None:
            return
        assert len(granted) == count
        assert not set(granted) & self.foreign, "a GPU in foreign use was handed out"
        taken = {g for gpus in self.held.values() for g in gpus}
        assert not set(granted) & taken, "a GPU was handed out twice"
        self.held[task] = granted

    def _head_protected(self, task: str, count: int, granted: tuple[str, ...] | None) -> None:
        """A grant to a task behind the head leaves what the head needs untouched."""
        if granted is None:
            return
        gpu_pool = count > 0
        possible = 4 - len(self.foreign)
        line = [
            (t, n)
            for t, n in self.before
            if (n > 0) == gpu_pool and (not gpu_pool or n <= possible)
        ]
        if not line or line[0][0] == task:
            return
        head, need = line[0]
        if gpu_pool:
            taken = {g for gs in self.held.values() for g in gs}
            spare = [g for g in FOUR if g not in taken and g not in self.foreign]
            assert len(spare) >= need, f"{task} took GPUs reserved for {head}"
        else:
            slots_left = 2 - sum(1 for gs in self.held.values() if not gs)
            assert slots_left >= 1, f"{task} took the CPU slot reserved for {head}"

    @rule(count=st.integers(0, 5))
    def plan_new(self, count: int) -> None:
        self.counter += 1
        task = f"t{self.counter}"
        self.before = self.alloc.reservations()
        decision = self.alloc.plan(task, count)
        if count > 4:
            assert decision.verdict is Verdict.TOO_LARGE
        self._check_grant(task, count, decision.gpu_ids if decision.granted else None)
        self._head_protected(task, count, decision.gpu_ids if decision.granted else None)

    @precondition(lambda self: bool(self.alloc.reservations()))
    @rule(data=st.data())
    def plan_waiting(self, data: st.DataObject) -> None:
        task, count = data.draw(st.sampled_from(self.alloc.reservations()))
        self.before = self.alloc.reservations()
        decision = self.alloc.plan(task, count)
        self._check_grant(task, count, decision.gpu_ids if decision.granted else None)
        self._head_protected(task, count, decision.gpu_ids if decision.granted else None)

    @precondition(lambda self: bool(self.alloc.holders()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(sorted(self.alloc.holders())))
        self.alloc.release(task)
        self.held.pop(task, None)

    @precondition(lambda self: bool(self.alloc.reservations()))
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        task, _ = data.draw(st.sampled_from(self.alloc.reservations()))
        self.alloc.withdraw(task)

    @rule(gpu=st.sampled_from(FOUR), busy=st.booleans())
    def foreign_use(self, gpu: str, busy: bool) -> None:
        if busy:
            self.inv.set_processes(int(gpu), GPUProcess(10_000 + int(gpu), 500.0))
            self.foreign.add(gpu)
        else:
            self.inv.set_processes(int(gpu))
            self.foreign.discard(gpu)

    @invariant()
    def never_double_booked(self) -> None:
        holders = self.alloc.holders()
        gpus = [g for gs in holders.values() for g in gs]
        assert len(gpus) == len(set(gpus))
        assert set(gpus) <= set(FOUR)
        assert sum(1 for gs in holders.values() if not gs) <= 2
        assert holders == self.held

    @invariant()
    def head_is_granted_once_it_fits(self) -> None:
        line = [(t, n) for t, n in self.alloc.reservations() if n > 0]
        if not line:
            return
        head, need = line[0]
        free = [g for g in self.alloc.free() if g not in self.foreign]
        if len(free) >= need:
            self.before = self.alloc.reservations()
            decision = self.alloc.plan(head, need)
            assert decision.granted, f"{head} fits ({free}) but got {decision}"
            self._check_grant(head, need, decision.gpu_ids)


AllocationMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_allocation_state_machine = AllocationMachine.TestCase
