"""The scheduled digest: ``overnight summary`` since the slot before, sent by one agent per slot.

Every agent with a ``digest`` setting looks at each housekeeping tick whether a slot is due
(:meth:`DigestSchedule.due`); the first to claim the slot in Redis sends the table to its
``notify`` targets, the others find it claimed. So the weekend's table is in the inbox on Monday
at 07:00 however many agents run, and none when every agent was down for the hour after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from overnight.commands.reports import render_summary, summary_report, tasks_since
from overnight.notify.messages import digest
from overnight.notify.notifier import Notifier
from overnight.notify.schedule import DigestSchedule

log = logging.getLogger(__name__)


class Digest:
    """Sends the summary when a slot of ``schedule`` is due, through ``notifier``."""

    def __init__(
        self, schedule: DigestSchedule, notifier: Notifier, now: Callable[[], datetime]
    ) -> None:
        self.schedule = schedule
        self.notifier = notifier
        self._now = now
        self._seen: datetime | None = None  # the last slot this agent looked at

    def tick(self) -> bool:
        """Send the due slot's digest if this agent claims it; True when it did."""
        if not self.schedule.slots or not self.notifier.targets:
            return False
        now = self._now()
        slot = self.schedule.due(now)
        if slot is None or slot == self._seen:
            return False
        self._seen = slot
        since = self.schedule.before(slot)
        store = self.notifier.store
        records = tasks_since(store, since.timestamp())
        report = summary_report(records, since.timestamp(), time.time())
        message = digest(f"{slot:%a %Y-%m-%d %H:%M}", render_summary(report))
        if not self.notifier.claim(message):
            return False
        log.info("sending the digest for %s", message.title)
        self.notifier.post(message, self.notifier.targets)
        return True
