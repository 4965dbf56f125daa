"""The agent's sender: tells each event once, however many agents see it, off the task's path.

An event (a task's failure, a sweep's end, an agent lost, a digest's slot) is claimed first with
``SET NX`` on its key (``keys.notified``): the one agent that sets it sends, the others do
nothing. Messages are then delivered by one thread of the notifier's, each target tried
``tries`` times with a doubling wait; a delivery that still fails is a note on the task (and a
warning in the agent's log), never the task's failure.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Iterable, Sequence

from overnight.errors import CorruptRecord, DeliveryFailed, NotifyTargetError, TaskNotFound
from overnight.notify.delivery import deliver
from overnight.notify.messages import Message, agent_lost, sweep_ended, task_failed
from overnight.notify.targets import SmtpSettings, Target, parse_target, parse_targets
from overnight.queue import keys, replies
from overnight.queue.index import Query
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Delivery:
    target: Target
    message: Message


class Notifier:
    """Claims events and delivers their messages; one per agent."""

    def __init__(
        self,
        store: TaskStore,
        *,
        agent: str,
        targets: Sequence[str] = (),
        smtp: SmtpSettings | None = None,
        tries: int = 3,
        backoff: float = 5.0,
    ) -> None:
        self.store = store
        self.agent = agent
        self.targets = parse_targets(list(targets))  # the agent's own: agents lost, digests
        self.smtp = smtp or SmtpSettings()
        self.tries = max(1, tries)
        self.backoff = backoff
        self._pending: queue.Queue[_Delivery | None] = queue.Queue()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- events ---------------------------------------------------------------------------------

    def task_ended(self, record: TaskRecord) -> None:
        """``record`` reached its final status here: tell its failure (its sweep's end is an
        event :meth:`drain` finds)."""
        if record.status is TaskStatus.FAILED:
            self.send(task_failed(record), record.options.notify)

    def drain(self, most: int = 100) -> int:
        """Tell the events anyone left in ``keys.UNTOLD`` (each popped by one agent): sweeps
        that may have ended, tasks whose agent was lost. Returns how many it took."""
        events = [replies.text(e) for e in self.store.redis.spop(keys.UNTOLD, most) or []]
        lost = _ids(events, "lost:")
        if lost:
            self.tasks_lost(lost)
        for sweep in sorted(set(_ids(events, "sweep:"))):
            self.sweep_changed(sweep)
        return len(events)

    def sweep_changed(self, sweep: str) -> None:
        """Tell the sweep's end once every task of it is final."""
        records = self.store.find(Query(sweep=sweep, limit=None))
        if not records or not all(r.status.is_final for r in records):
            return
        targets = [t for r in records for t in r.options.notify]
        metric = next((r.options.notify_metric for r in records if r.options.notify_metric), None)
        if targets:
            self.send(sweep_ended(sweep, records, metric), targets)

    def tasks_lost(self, task_ids: Iterable[str]) -> None:
        """Tell, per agent, that the agent holding these tasks (just marked lost) is gone."""
        by_agent: dict[str, list[TaskRecord]] = {}
        for record in self.store.get_many(list(task_ids)):
            gone = _lost_agent(record) if record.status is not TaskStatus.CORRUPT else None
            if gone is not None:
                by_agent.setdefault(gone, []).append(record)
        for gone, records in by_agent.items():
            targets = [t for r in records for t in r.options.notify]
            self.send(agent_lost(gone, records), targets, own=self.targets)

    # -- sending --------------------------------------------------------------------------------

    def claim(self, message: Message) -> bool:
        """Whether this agent is the one to send ``message`` (its event claimed now)."""
        return bool(
            self.store.redis.set(
                keys.notified(message.key),
                self.agent,
                nx=True,
                px=max(1, int(message.claim_ttl * 1000)),
            )
        )

    def send(self, message: Message, targets: Sequence[str], *, own: Sequence[Target] = ()) -> bool:
        """Claim the event and queue the message to each target (``own``: parsed ones, the
        agent's, too); False when another agent has it or there is nowhere to send."""
        found = {(t.kind, t.url, t.addresses): t for t in own}
        for value in targets:
            try:
                target = parse_target(value)
            except NotifyTargetError as exc:  # checked at enqueue: a record changed by hand
                self._note(message, f"notification not sent: {exc}")
                continue
            found.setdefault((target.kind, target.url, target.addresses), target)
        if not found or not self.claim(message):
            return False
        self.post(message, list(found.values()))
        return True

    def post(self, message: Message, targets: Sequence[Target]) -> None:
        """Queue ``message`` to ``targets`` without a claim (the caller claimed its event)."""
        self._start()
        for target in targets:
            self._pending.put(_Delivery(target, message))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (waits at most ``timeout``), then stop the thread."""
        self._closing.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._pending.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="overnight-notify", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            self._deliver(item)

    def _deliver(self, item: _Delivery) -> None:
        wait = self.backoff
        for attempt in range(1, self.tries + 1):
            try:
                deliver(item.target, item.message, self.smtp)
            except DeliveryFailed as exc:
                error = exc
            else:
                log.info("notified %s: %s", item.target.shown, item.message.title)
                return
            if attempt < self.tries:
                self._closing.wait(wait)  # closing: the tries go on, without the waits
                wait *= 2
        log.warning(
            "notification to %s failed after %d tries: %s", item.target.shown, self.tries, error
        )
        self._note(
            item.message,
            f"notification ({item.message.title}) to {item.target.shown} failed after "
            f"{self.tries} tries: {error}",
        )

    def _note(self, message: Message, note: str) -> None:
        if message.task_id is None:
            return
        try:
            self.store.add_note(message.task_id, note)
        except (TaskNotFound, CorruptRecord):
            pass
        except Exception:  # Redis away: the log has it
            log.exception("cannot note a failed notification on task %s", message.task_id)


def _ids(events: Iterable[str], prefix: str) -> list[str]:
    """The ids of the events of one kind; anything but an id overnight makes is passed over."""
    ids = (e.removeprefix(prefix) for e in events if e.startswith(prefix))
    return [i for i in ids if len(i) == keys.ID_LENGTH and keys.looks_like_id(i)]


def _lost_agent(record: TaskRecord) -> str | None:
    """The agent a lost (or since requeued) task was lost by, from its history's notes."""
    for change in reversed(record.history):
        if change.status is TaskStatus.LOST:
            return record.agent or _agent_in(change.note)
    return None


def _agent_in(note: str) -> str | None:
    words = note.split()
    return words[1] if len(words) > 1 and words[0] == "agent" else None
