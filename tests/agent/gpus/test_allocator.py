from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from overnight.agent.gpus.allocator import Allocator, Verdict
from overnight.agent.gpus.inventory import FakeInventory, GPUProcess
from overnight.agent.service.rqworker import Claim
from overnight.errors import GPUError
from overnight.queue.records import Change, TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from tests.fixtures.agents import (
    Background,
    agent_config,
    enqueue,
    log_text,
    make_daemon,
    wait_for,
    wait_status,
)
from tests.fixtures.docker import BASE_IMAGE
from tests.fixtures.gitrepo import Repo
from tests.fixtures.gpus import gpu_agent, wait_output

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


def test_memory_no_listed_process_holds_is_foreign_on_a_gpu_free_of_ours() -> None:
    # Another container's job, invisible to NVML's process list from here.
    inv = FakeInventory.with_gpus(2)
    inv.set_usage(1, utilization_pct=90.0, memory_used_mb=30000.0)
    alloc = Allocator(("0", "1"), inventory=inv, foreign_threshold_mb=1024)
    assert alloc.unavailable() == {
        "1": "30000 MB in use by processes overnight did not start "
        "(processes NVML does not list); threshold 1024 MB"
    }
    assert alloc.try_acquire("a", 1) == ("0",)
    assert alloc.try_acquire("b", 1) is None
    # On a GPU a task of ours holds, unlisted memory may be the task's own: not held against it.
    inv.set_usage(0, utilization_pct=90.0, memory_used_mb=20000.0)
    assert "0" not in alloc.unavailable()
    alloc.release("a")
    assert "0" in alloc.unavailable()


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


def test_acquire_ids_books_the_very_gpus_an_adopted_task_runs_on() -> None:
    alloc = Allocator(FOUR, cpu_slots=1)
    assert alloc.acquire_ids("adopted", ("2",)) == ("2",)
    assert alloc.try_acquire("new", 3) == ("0", "1", "3")
    # ids this agent does not offer, or another task holds, are left out
    assert alloc.acquire_ids("other", ("3", "7")) == ()
    # CPU tasks found running are booked even beyond cpu_slots
    assert alloc.acquire_ids("c1", ()) == ()
    assert alloc.acquire_ids("c2", ()) == ()
    assert alloc.holders() == {
        "adopted": ("2",),
        "new": ("0", "1", "3"),
        "other": (),
        "c1": (),
        "c2": (),
    }
    with pytest.raises(GPUError, match="already holds"):
        alloc.acquire_ids("adopted", ("2",))


def test_acquire_ids_ignores_foreign_use_and_reservations() -> None:
    inv = FakeInventory.with_gpus(2)
    inv.set_processes(1, GPUProcess(999, 5000.0))
    alloc = Allocator(("0", "1"), inventory=inv)
    assert alloc.try_acquire("a", 1) == ("0",)
    assert alloc.plan("head", 2).verdict is Verdict.WAIT
    assert alloc.acquire_ids("adopted", ("1",)) == ("1",)
    assert alloc.free() == ()


def test_ready_and_has_room_follow_the_reservation_rule() -> None:
    alloc = Allocator(("0", "1"), cpu_slots=1)
    assert alloc.has_room()
    assert alloc.try_acquire("a", 1) == ("0",)
    assert alloc.plan("big", 2).verdict is Verdict.WAIT
    assert not alloc.ready("big")
    assert alloc.has_room()  # the CPU slot is free
    assert alloc.try_acquire("c", 0) == ()
    assert not alloc.has_room()  # GPU 1 is free but kept for big
    alloc.release("a")
    assert alloc.ready("big")
    assert alloc.has_room()
    assert alloc.ready("not-waiting")  # plan decides for a task that holds no place
    assert alloc.plan("big", 2).granted


def test_has_room_when_foreign_use_makes_the_head_impossible() -> None:
    inv = FakeInventory.with_gpus(2)
    inv.set_processes(1, GPUProcess(7, 8000.0))
    alloc = Allocator(("0", "1"), cpu_slots=1, inventory=inv)
    assert alloc.plan("big", 2).verdict is Verdict.WAIT
    alloc.try_acquire("c", 0)
    assert not alloc.ready("big")
    assert alloc.has_room()  # GPU 0 goes to smaller tasks while GPU 1 is in foreign use


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

    @rule()
    def ask_room(self) -> None:
        """``ready`` and ``has_room`` agree with what ``plan`` then does."""
        self.alloc.unavailable()  # a fresh GPU reading, as plan takes
        room = self.alloc.has_room()
        ready = [(t, n) for t, n in self.alloc.reservations() if self.alloc.ready(t)]
        if ready:
            assert room
            task, count = ready[0]
            self.before = self.alloc.reservations()
            decision = self.alloc.plan(task, count)
            assert decision.granted, f"{task} was ready but got {decision}"
            self._check_grant(task, count, decision.gpu_ids)
            return
        self.counter += 1
        task = f"t{self.counter}"
        grants = [(n, self.alloc.try_acquire(f"{task}-{n}", n)) for n in (0, 1)]
        assert room == any(g is not None for _, g in grants)
        for n, granted in grants:
            self._check_grant(f"{task}-{n}", n, granted)

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
test_allocation_state_machine = pytest.mark.slow(AllocationMachine.TestCase)


# -- through the real daemon (in-process, real Redis, venv tasks, a fake GPU inventory) --------


def _held(record: TaskRecord) -> tuple[float, float]:
    """From the claim (GPUs booked) to the end of the task."""
    claimed = next(c.at for c in record.history if c.status is TaskStatus.PREPARING)
    assert record.ended is not None
    return claimed, record.ended


def assert_no_gpu_shared(records: list[TaskRecord]) -> None:
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if set(a.gpu_ids) & set(b.gpu_ids):
                (a0, a1), (b0, b1) = _held(a), _held(b)
                assert a1 <= b0 or b1 <= a0, f"{a.id} and {b.id} held GPU {a.gpu_ids} at once"


def test_the_agent_config_sets_the_foreign_memory_threshold(
    redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    inventory = FakeInventory.with_gpus(1)
    inventory.set_processes(0, GPUProcess(4242, 3000.0))
    default = gpu_agent(redis_url, tmp_path / "a", venv_cache, inventory)
    assert "threshold 1024 MB" in default.allocator.unavailable()["0"]
    tolerant = gpu_agent(redis_url, tmp_path / "b", venv_cache, inventory, gpu_foreign_mb=4096)
    assert tolerant.allocator.unavailable() == {}


@pytest.mark.slow
def test_daemon_runs_one_gpu_tasks_side_by_side_on_different_gpus(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    flag = tmp_path / "flag"
    # The waiter can only finish if the toucher runs while it waits: both run at once.
    waiter = enqueue(agent_store, project, "--wait-for", str(flag), gpus=1, timeout=60.0)
    toucher = enqueue(agent_store, project, "--touch", str(flag), gpus=1)
    third = enqueue(agent_store, project, gpus=1)
    daemon = gpu_agent(redis_url, tmp_path / "agent", venv_cache, FakeInventory.with_gpus(2))
    daemon.run(burst=True)
    records = [agent_store.get(r.id) for r in (waiter, toucher, third)]
    assert [r.status for r in records] == [TaskStatus.FINISHED] * 3
    assert {records[0].gpu_ids, records[1].gpu_ids} == {("0",), ("1",)}
    for record in records:
        assert len(record.gpu_ids) == 1
        text = log_text(agent_store, record.id)
        assert f"CUDA_VISIBLE_DEVICES={record.gpu_ids[0]}" in text
        assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in text
    assert_no_gpu_shared(records)


@pytest.mark.slow
def test_daemon_reserves_gpus_for_a_two_gpu_head_without_popping_it_again(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    flag = tmp_path / "flag"
    first = enqueue(agent_store, project, "--wait-for", str(flag), gpus=1, timeout=60.0)
    head = enqueue(agent_store, project, gpus=2)
    stream = [enqueue(agent_store, project, gpus=1, queue="q2") for _ in range(3)]
    daemon = gpu_agent(
        redis_url, tmp_path / "agent", venv_cache, FakeInventory.with_gpus(2), queues=("q", "q2")
    )
    pushed: list[str] = []
    push_back = daemon.worker.push_back

    def recorded_push_back(claim: Claim) -> None:
        pushed.append(claim.job_id)
        push_back(claim)

    daemon.worker.push_back = recorded_push_back  # type: ignore[method-assign]
    agent = Background(daemon)
    try:
        wait_status(agent_store, first.id, TaskStatus.RUNNING)
        wait_for(
            lambda: head.id in dict(daemon.allocator.reservations()), what="the head to reserve"
        )
        seen = pushed.count(head.id)
        # GPU 1 is free but kept for the head: no 1-GPU task starts, and the head is not popped
        # again while nothing can start (the old loop popped and pushed it twice a second).
        threading.Event().wait(1.0)
        assert pushed.count(head.id) == seen == 1
        assert daemon.allocator.free() == ("1",)
        assert [agent_store.get(r.id).status for r in stream] == [TaskStatus.QUEUED] * 3
        flag.touch()
        done = [wait_status(agent_store, r.id, TaskStatus.FINISHED) for r in (head, *stream)]
    finally:
        flag.touch()
        agent.stop()
    big = done[0]
    assert big.gpu_ids == ("0", "1")
    for small in done[1:]:
        assert small.started is not None and big.ended is not None
        assert small.started >= big.ended, "a 1-GPU task ran before the waiting 2-GPU head"
    assert_no_gpu_shared([agent_store.get(first.id), *done])


@pytest.mark.slow
def test_daemon_keeps_a_gpu_used_by_others_and_workers_says_why(
    agent_store: TaskStore, project: Repo, redis_url: str, tmp_path: Path, venv_cache: Path
) -> None:
    inventory = FakeInventory.with_gpus(2)
    inventory.set_processes(1, GPUProcess(4242, 3000.0))  # someone's notebook on GPU 1
    flag = tmp_path / "flag"
    first = enqueue(agent_store, project, "--wait-for", str(flag), gpus=1, timeout=60.0)
    second = enqueue(agent_store, project, gpus=1)
    daemon = gpu_agent(redis_url, tmp_path / "agent", venv_cache, inventory)
    agent = Background(daemon)
    try:
        wait_for(lambda: "pid=" in log_text(agent_store, first.id), what="the first task")
        pid = int(re.search(r"pid=(\d+)", log_text(agent_store, first.id))[1])  # type: ignore[index]
        # The task's own memory on its GPU is not foreign use.
        inventory.set_processes(0, GPUProcess(pid, 8000.0))
        why = "3000 MB in use by processes overnight did not start (pid 4242); threshold 1024 MB"
        assert daemon.allocator.unavailable() == {"1": why}
        # The agent says it is busy at its next heartbeat after the claim, which may come
        # after the task's first output does.
        wait_output(redis_url, (f"GPU 1 held back: {why}", "busy"), "workers")
        assert agent_store.get(second.id).status is TaskStatus.QUEUED
        inventory.set_processes(1)  # the notebook ends
        done = wait_status(agent_store, second.id, TaskStatus.FINISHED)
        assert done.gpu_ids == ("1",)
        assert agent_store.get(first.id).status is TaskStatus.RUNNING
    finally:
        flag.touch()
        agent.stop()
    assert agent_store.get(first.id).status is TaskStatus.FINISHED


WAIT_FOR_GO = "echo started; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo done"


@pytest.mark.slow
@pytest.mark.docker
def test_adopted_task_keeps_its_gpu_and_its_memory_is_not_foreign(
    agent_store: TaskStore,
    project: Repo,
    redis_url: str,
    tmp_path: Path,
    venv_cache: Path,
    docker_sandbox: Any,
) -> None:
    record = enqueue(agent_store, project, gpus=1)
    agent_store.transition(
        record.id, TaskStatus.PREPARING, Change(agent=docker_sandbox.agent_name, gpu_ids=("1",))
    )
    agent_store.transition(record.id, TaskStatus.RUNNING)
    # The container the agent started on GPU 1 before it died (no GPU is given to it here).
    container = docker_sandbox.client.containers.run(
        BASE_IMAGE,
        ["sh", "-c", WAIT_FOR_GO],
        detach=True,
        labels={
            "overnight.role": "task",
            "overnight.agent": docker_sandbox.agent_name,
            "overnight.task": record.id,
        },
    )
    inventory = FakeInventory.with_gpus(2)
    config = agent_config(redis_url, tmp_path / "agent", venv_cache, name=docker_sandbox.agent_name)
    environment = docker_sandbox.environment()
    daemon = make_daemon(config, environment=environment, gpu_ids=("0", "1"), inventory=inventory)
    try:
        assert daemon.adoption.adopt(daemon.pipeline.environment) == [record.id]
        # The very GPU it runs on is booked: a new task gets the other one.
        assert daemon.allocator.holders() == {record.id: ("1",)}
        assert daemon.allocator.try_acquire("next", 1) == ("0",)
        daemon.allocator.release("next")
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        wait_for(lambda: pid in daemon.own_pids(), what="the container's pids to be the task's")
        inventory.set_processes(1, GPUProcess(pid, 6000.0))
        assert daemon.allocator.unavailable() == {}
        inventory.set_processes(1, GPUProcess(pid + 100_000, 6000.0))
        assert "1" in daemon.allocator.unavailable()
    finally:
        container.exec_run(["touch", "/tmp/go"])
    done = wait_status(agent_store, record.id, TaskStatus.FINISHED, TaskStatus.FAILED)
    assert done.status is TaskStatus.FINISHED, done.error
    wait_for(lambda: not daemon.allocator.holders(), what="the adopted task's GPU to be released")
