"""``overnight queues`` (what waits and runs where) and ``overnight workers`` (the agents)."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping

import click

from overnight.commands.common import echo_json, json_option, print_table, redis_option, store_for
from overnight.commands.views import when
from overnight.queue import order
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.estimates import Estimates
from overnight.queue.index import Query
from overnight.queue.records import TaskStatus
from overnight.queue.store import TaskStore
from overnight.units import format_duration


@dataclasses.dataclass(frozen=True)
class QueueSummary:
    queue: str
    queued: int
    held: int
    waiting: int
    running: int  # preparing or running
    total: int  # tasks ever enqueued on it and not yet collected
    agents: list[str]

    def cells(self) -> list[str]:
        counts = (self.queued, self.held, self.waiting, self.running, self.total)
        return [self.queue, *(str(n) for n in counts), ", ".join(self.agents) or "none"]


_COUNTED = (
    TaskStatus.QUEUED,
    TaskStatus.HELD,
    TaskStatus.WAITING,
    TaskStatus.PREPARING,
    TaskStatus.RUNNING,
)


@dataclasses.dataclass(frozen=True)
class Place:
    """One task in a queue's order: its position (1 is taken next; 0: held, not in line)."""

    queue: str
    position: int
    id: str
    status: str
    name: str
    expect: str  # "3h (--expect)", "" when nothing is known

    def cells(self) -> list[str]:
        return [self.queue, str(self.position) if self.position else "-", self.id, self.status,
                self.name, self.expect]  # fmt: skip


@click.command("queues")
@click.option("-v", "--verbose", is_flag=True, help="Also each queue's tasks in the order taken.")
@json_option
@redis_option
def queues_command(verbose: bool, as_json: bool, redis_url: str | None) -> None:
    """Each queue with its queued, waiting and running tasks and the agents serving it."""
    _, store = store_for(redis_url)
    agents = AgentRegistry(store.redis).list()
    counts: dict[str, collections.Counter[TaskStatus]] = collections.defaultdict(
        collections.Counter
    )
    for record in store.get_many(store.index.ids(_COUNTED)):
        if record.status is not TaskStatus.CORRUPT:
            counts[record.options.queue][record.status] += 1
    names = sorted(set(store.known_queues()) | {q for a in agents for q in a.queues})
    rows = [
        QueueSummary(
            queue=name,
            queued=counts[name][TaskStatus.QUEUED],
            held=counts[name][TaskStatus.HELD],
            waiting=counts[name][TaskStatus.WAITING],
            running=counts[name][TaskStatus.PREPARING] + counts[name][TaskStatus.RUNNING],
            total=store.index.count(name),
            agents=[a.name for a in agents if name in a.queues],
        )
        for name in names
    ]
    places = [p for name in names for p in _places(store, name)] if verbose else []
    if as_json:
        echo_json({"queues": rows, "order": places} if verbose else rows)
    elif rows:
        print_table(
            ("QUEUE", "QUEUED", "HELD", "WAITING", "RUNNING", "TOTAL", "AGENTS"),
            [r.cells() for r in rows],
        )
        if places:
            click.echo()
            print_table(
                ("QUEUE", "POS", "ID", "STATUS", "NAME", "EXPECTED"), [p.cells() for p in places]
            )
    else:
        click.echo("no queues yet: `overnight enqueue` creates one")


def _places(store: TaskStore, queue: str) -> list[Place]:
    """``queue``'s tasks in the order agents take them, then its held ones (oldest first)."""
    line = store.get_many(order.queue_order(store, queue))
    held = store.find(Query(queue=queue, statuses=frozenset({TaskStatus.HELD}), limit=None))
    estimates = Estimates(store)
    places = []
    for position, record in enumerate([*line, *reversed(held)], start=1):
        in_line = record.status is not TaskStatus.HELD
        estimate = estimates.of(record)
        places.append(
            Place(
                queue=queue,
                position=position if in_line else 0,
                id=record.id,
                status=record.status.value,
                name=record.name or "",
                expect=estimate.describe() if estimate is not None else "",
            )
        )
    return places


@click.command("workers")
@json_option
@redis_option
def workers_command(as_json: bool, redis_url: str | None) -> None:
    """Live agents: queues, GPUs, state, current tasks, last heartbeat."""
    _, store = store_for(redis_url)
    agents = AgentRegistry(store.redis).list()
    if as_json:
        echo_json(agents)
        return
    if not agents:
        click.echo("no live agents: start one with `overnight agent daemon --queue Q`")
        return
    now = time.time()
    print_table(
        (
            "AGENT",
            "HOST",
            "STATE",
            "QUEUES",
            "GPUS",
            "ENV",
            "TASKS",
            "HEARTBEAT",
            "UP SINCE",
            "NOTES",
        ),
        [
            [
                a.name,
                a.host,
                a.state,
                ",".join(a.queues),
                ",".join(a.gpus) or "none",
                a.env_mode,
                " ".join(a.tasks),
                f"{format_duration(now - a.heartbeat)} ago" if a.heartbeat else "",
                when(a.started) if a.started else "",
                "; ".join(agent_notes(a)),
            ]
            for a in agents
        ],
    )


def agent_notes(info: AgentInfo) -> list[str]:
    """Why an agent holds GPUs back and when its windows change, from what it publishes."""
    notes = []
    windows = info.extra.get("windows")
    if isinstance(windows, Mapping) and windows.get("state"):
        notes.append(f"windows: {windows['state']}")
    waits = info.extra.get("waits")
    if isinstance(waits, Mapping):
        for task_id, why in list(waits.items())[:3]:
            notes.append(f"{task_id} waits: {str(why).split(': ', 1)[-1]}")
        if len(waits) > 3:
            notes.append(f"{len(waits) - 3} more wait")
    if info.extra.get("hold"):
        notes.append(f"paused after a host fault: {info.extra['hold']}")
    slots = info.extra.get("slots")
    gpus = slots.get("gpus") if isinstance(slots, Mapping) else None
    if isinstance(gpus, Mapping):
        for gpu, state in gpus.items():
            if isinstance(state, Mapping) and state.get("unavailable"):
                notes.append(f"GPU {gpu} held back: {state['unavailable']}")
    return notes


def register(cli: click.Group, agent: click.Group) -> None:
    cli.add_command(queues_command)
    cli.add_command(workers_command)
