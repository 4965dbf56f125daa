"""Names of everything overnight keeps in Redis, and task ids.

All keys start with ``overnight:``; RQ's own keys (``rq:...``) are named by RQ. Keeping every name
here means a newcomer can read the whole layout in one screen.
"""

from __future__ import annotations

import re
import uuid

PREFIX = "overnight:"

ID_LENGTH = 12
_ID = re.compile(r"^[0-9a-f]{1,12}$")


def new_task_id() -> str:
    """A random 12-hex-digit id; random (not time-ordered) so that short prefixes stay unique."""
    return uuid.uuid4().hex[:ID_LENGTH]


def new_sweep_id() -> str:
    """A sweep's id: like a task id (12 hex digits), for the tasks one ``--sweep`` enqueue made."""
    return uuid.uuid4().hex[:ID_LENGTH]


def looks_like_id(text: str) -> bool:
    """Whether ``text`` could be a task id or a prefix of one."""
    return bool(_ID.match(text))


def task(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def spec(spec_id: str) -> str:
    return f"{PREFIX}spec:{spec_id}"


def blob(sha256: str) -> str:
    return f"{PREFIX}blob:{sha256}"


def log(task_id: str) -> str:
    return f"{PREFIX}log:{task_id}"


def log_meta(task_id: str) -> str:
    """Hash with the byte count of a task's log and what was trimmed from its head."""
    return f"{PREFIX}logmeta:{task_id}"


def series(task_id: str) -> str:
    """JSON of a task's resource time series (kept out of its record, which ``ls`` reads)."""
    return f"{PREFIX}series:{task_id}"


def metric_series(task_id: str) -> str:
    """JSON of a task's metric series, name -> points (kept out of its record like ``series``)."""
    return f"{PREFIX}metricseries:{task_id}"


def heartbeat(task_id: str) -> str:
    return f"{PREFIX}hb:{task_id}"


def cancel(task_id: str) -> str:
    return f"{PREFIX}cancel:{task_id}"


def held_place(task_id: str) -> str:
    """List saying where a held task stood in its queue: a marker, then the ids behind it."""
    return f"{PREFIX}heldplace:{task_id}"


def wait_reason(task_id: str) -> str:
    """Why an agent left a queued task in place (it would not fit its window); expires."""
    return f"{PREFIX}wait:{task_id}"


def notified(event: str) -> str:
    """Claim of a notification's event (``sweep:<id>``, ``digest:<slot>``): the agent that sets
    it sends the message, so one is sent however many agents see the event."""
    return f"{PREFIX}notified:{event}"


UNTOLD = f"{PREFIX}untold"
"""Set of events agents have yet to tell (``sweep:<id>``: a task of it became final;
``lost:<task id>``: its agent was lost), whoever caused them: the CLI's reaping and cancels too."""


def dependents(task_id: str) -> str:
    """Set of waiting tasks that run only after this one finishes."""
    return f"{PREFIX}dependents:{task_id}"


REFS = f"{PREFIX}refs"
"""Hash of reference counts: ``s:<spec_id>`` (tasks per spec), ``b:<sha256>`` (specs per blob)."""

QUEUES = f"{PREFIX}queues"
"""Set of every queue name a task was ever enqueued on."""

BY_CREATED = f"{PREFIX}idx:created"
"""Sorted set of all task ids, scored by creation time."""

BY_ID = f"{PREFIX}idx:ids"
"""Sorted set of all task ids with score 0, for prefix lookups (ZRANGEBYLEX)."""


SWEEPS = f"{PREFIX}idx:sweeps"
"""Sorted set of every sweep id with score 0, for prefix lookups; an id whose sweep index is gone
(its tasks removed) is skipped, and pruned by gc."""


def by_sweep(sweep: str) -> str:
    """Sorted set of a sweep's task ids, scored by creation time."""
    return f"{PREFIX}idx:sweep:{sweep}"


def by_queue(queue: str) -> str:
    return f"{PREFIX}idx:queue:{queue}"


def by_status(status: str) -> str:
    return f"{PREFIX}idx:status:{status}"


def by_tag(tag: str) -> str:
    return f"{PREFIX}idx:tag:{tag}"


def sweep_name(name: str) -> str:
    """A sweep's name (an ``overnight optimize`` study's) -> its id, for ``--sweep NAME``."""
    return f"{PREFIX}sweepname:{name}"


def study(name: str) -> str:
    """JSON of an ``overnight optimize`` study's settings (:mod:`overnight.optimize.settings`)."""
    return f"{PREFIX}study:{name}"


def study_lease(name: str) -> str:
    """Who drives the study now (a driver's id), with a TTL its driver renews."""
    return f"{PREFIX}studylease:{name}"


DETACHED_STUDIES = f"{PREFIX}studies:detached"
"""Set of the names of studies that agents drive (``overnight optimize --detach``)."""

OPTUNA_JOURNAL = f"{PREFIX}optuna"
"""Prefix of the keys of Optuna's Redis journal that holds the studies (Optuna names the rest)."""


AGENTS = f"{PREFIX}agents"
"""Sorted set of agent names, scored by the time their registration expires."""


def agent(name: str) -> str:
    return f"{PREFIX}agent:{name}"
