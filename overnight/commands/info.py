"""``overnight queues`` (what waits and runs where) and ``overnight workers`` (the agents)."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping

import click

from overnight.commands.common import echo_json, json_option, print_table, redis_option, store_for
from overnight.commands.views import when
from overnight.queue.agents import AgentInfo, AgentRegistry
from overnight.queue.records import TaskStatus
from overnight.units import format_duration


@dataclasses.dataclass(frozen=True)
class QueueSummary:
    queue: str
    queued: int
    waiting: int
    running: int  # preparing or running
    total: int  # tasks ever enqueued on it and not yet collected
    agents: list[str]

    def cells(self) -> list[str]:
        counts = (self.queued, self.waiting, self.running, self.total)
        return [self.queue, *(str(n) for n in counts), ", ".join(self.agents) or "none"]


_COUNTED = (TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.PREPARING, TaskStatus.RUNNING)


@click.command("queues")
@json_option
@redis_option
def queues_command(as_json: bool, redis_url: str | None) -> None:
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
            waiting=counts[name][TaskStatus.WAITING],
            running=counts[name][TaskStatus.PREPARING] + counts[name][TaskStatus.RUNNING],
            total=store.index.count(name),
            agents=[a.name for a in agents if name in a.queues],
        )
        for name in names
    ]
    if as_json:
        echo_json(rows)
    elif rows:
        print_table(
            ("QUEUE", "QUEUED", "WAITING", "RUNNING", "TOTAL", "AGENTS"),
            [r.cells() for r in rows],
        )
    else:
        click.echo("no queues yet: `overnight enqueue` creates one")


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
