"""The agents' side of ``overnight optimize --detach``: each agent, from its housekeeping, drives
the detached studies whose lease it holds or can take, one step at a time.

One driver per study at a time (:class:`~overnight.optimize.lease.DriverLease`, renewed each
step); an agent that dies loses its leases when they expire and another agent takes them over,
finding the trials in flight from their tasks. Optuna is imported on the first detached study
seen; an agent without it says so once and leaves the studies to agents that have it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from overnight.errors import MetricNeverReported
from overnight.optimize import settings as stored
from overnight.optimize.installed import optuna_installed
from overnight.optimize.lease import DriverLease
from overnight.queue import keys, replies
from overnight.queue.store import TaskStore

if TYPE_CHECKING:
    from overnight.optimize.driver import Driver
    from overnight.optimize.storage import StudyStorage

log = logging.getLogger(__name__)


class DetachedDrivers:
    """The detached studies this agent (``owner``) drives; ``ttl`` is its leases' lifetime."""

    def __init__(self, store: TaskStore, redis_url: str, owner: str, *, ttl: float) -> None:
        self.store = store
        self.redis_url = redis_url
        self.owner = owner
        self.ttl = ttl
        self._open: dict[str, tuple[Driver, StudyStorage]] = {}
        self._said_missing = False

    def tick(self) -> None:
        """One step of each detached study this agent may drive now."""
        names = set(replies.texts(self.store.redis.smembers(keys.DETACHED_STUDIES)))
        for name in set(self._open) - names:  # taken back by a laptop (--resume)
            self._close(name)
            DriverLease(self.store.redis, name, owner=self.owner).release()
        if not names:
            return
        if not optuna_installed():
            if not self._said_missing:
                log.warning("detached studies wait for an agent with Optuna (the optimize extra)")
                self._said_missing = True
            return
        for name in sorted(names):
            try:
                self._step(name)
            except MetricNeverReported as exc:  # stop it: every trial would fail the same way
                log.error("%s", exc)
                self._stop(name)
            except Exception:  # one broken study must not stop the others, nor the agent
                log.exception("driving study %s failed; trying again", name)
                self._close(name)

    def _step(self, name: str) -> None:
        lease = DriverLease(self.store.redis, name, owner=self.owner, ttl=self.ttl)
        if not lease.take():
            self._close(name)  # another driver has it (it took over after we stalled)
            return
        driver = self._driver(name)
        report = driver.step()
        if report.done:
            log.info("study %s is done", name)
            self._stop(name)

    def _stop(self, name: str) -> None:
        """No agent drives the study any more (it is done, or cannot go on)."""
        self.store.redis.srem(keys.DETACHED_STUDIES, name)
        self._close(name)
        DriverLease(self.store.redis, name, owner=self.owner).release()

    def _driver(self, name: str) -> Driver:
        if name not in self._open:
            from overnight.optimize.driver import Driver
            from overnight.optimize.storage import StudyStorage

            settings = stored.load(self.store.redis, name)
            storage = StudyStorage(self.redis_url)  # detached studies are in overnight's Redis
            try:
                study = storage.load(settings)
            except BaseException:
                storage.close()
                raise
            self._open[name] = (Driver(self.store, settings, study), storage)
        return self._open[name][0]

    def _close(self, name: str) -> None:
        entry = self._open.pop(name, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        """Hand every study back (its lease released) and close their storages."""
        for name in list(self._open):
            self._close(name)
            DriverLease(self.store.redis, name, owner=self.owner).release()
