"""Which output files a task has: its manifest in Redis, and notes of the files not kept.

Per task, a hash of path -> entry (digest, size, mtime, when stored, which attempt, which store),
the newest attempt's file winning, and a hash of path -> note (why a file, or a pattern, was not
kept). A set per digest names the tasks using that blob, so ``gc`` deletes a blob only once no
task uses it. Everything read back is untrusted: an entry whose path could leave the task's
folder (absolute, ``..``, ``.git``) or whose fields are malformed is refused, never used.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable
from typing import Any

import redis
from redis.client import Pipeline

from overnight.errors import SpecError
from overnight.queue import keys, replies
from overnight.spec import check_path

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def entries_key(task_id: str) -> str:
    return f"{keys.PREFIX}outputs:{task_id}"


def notes_key(task_id: str) -> str:
    return f"{keys.PREFIX}outnotes:{task_id}"


def users_key(digest: str) -> str:
    """Set of the task ids whose manifests name the blob ``digest``."""
    return f"{keys.PREFIX}outusers:{digest}"


@dataclasses.dataclass(frozen=True)
class OutputEntry:
    """One stored output file of a task."""

    path: str  # relative to the task's tree, POSIX
    digest: str  # sha256 hex of its bytes
    size: int
    mtime: float
    stored: float  # unix time
    attempt: int
    store: str = "redis"  # the store's url, without credentials

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        del data["path"]
        return json.dumps(data, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class OutputNote:
    """A file (or a pattern) not kept, and why."""

    path: str
    reason: str
    attempt: int
    at: float


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A task's outputs as read from Redis: its files, its notes, and entries refused."""

    task_id: str
    entries: tuple[OutputEntry, ...]
    notes: tuple[OutputNote, ...]
    refused: tuple[str, ...]  # why each malformed or unsafe entry was not used

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)


def path_fault(path: str) -> str | None:
    """Why ``path`` cannot name an output file inside a task's tree, or None."""
    try:
        check_path(path, "outputs")
    except SpecError as exc:
        return str(exc)
    return None


def parse_entry(path: str, raw: str) -> OutputEntry:
    """An entry read from Redis; ValueError naming what is wrong with it."""
    fault = path_fault(path)
    if fault:
        raise ValueError(f"output path {path!r} refused: {fault}")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"output {path!r}: its entry is not a JSON object")
    digest = data.get("digest")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"output {path!r}: its digest is not a sha256 hex digest")
    size, attempt = data.get("size"), data.get("attempt")
    if not isinstance(size, int) or not isinstance(attempt, int) or not _count(size, attempt):
        raise ValueError(f"output {path!r}: its size or attempt is not a count")
    mtime, stored = data.get("mtime"), data.get("stored")
    if not isinstance(mtime, (int, float)) or not isinstance(stored, (int, float)):
        raise ValueError(f"output {path!r}: its times are not numbers")
    store = data.get("store", "redis")
    if not isinstance(store, str):
        raise ValueError(f"output {path!r}: its store is not a string")
    return OutputEntry(path, digest, size, float(mtime), float(stored), attempt, store)


def _count(*values: int) -> bool:
    return all(not isinstance(v, bool) and v >= 0 for v in values)


def read(client: redis.Redis, task_id: str) -> Manifest:
    """The task's manifest; an empty one when it has no outputs."""
    raw_entries = client.hgetall(entries_key(task_id))
    raw_notes = client.hgetall(notes_key(task_id))
    entries: list[OutputEntry] = []
    refused: list[str] = []
    for field, value in raw_entries.items():
        path = replies.text(field)
        try:
            entries.append(parse_entry(path, replies.text(value)))
        except (ValueError, TypeError) as exc:
            refused.append(str(exc))
    notes: list[OutputNote] = []
    for field, value in raw_notes.items():
        try:
            data = json.loads(replies.text(value))
            notes.append(
                OutputNote(
                    replies.text(field),
                    str(data["reason"]),
                    int(data.get("attempt", 0)),
                    float(data.get("at", 0.0)),
                )
            )
        except (ValueError, TypeError, KeyError):
            refused.append(f"a note on {replies.text(field)!r} is malformed")
    entries.sort(key=lambda e: e.path)
    notes.sort(key=lambda n: n.path)
    return Manifest(task_id, tuple(entries), tuple(notes), tuple(sorted(refused)))


def watched_entries(pipe: Pipeline, task_id: str) -> dict[str, str]:
    """The task's valid entries (path -> their JSON), its manifest watched on ``pipe`` so that a
    ``gc`` removing it before :func:`queue_inherit` runs makes the transaction retry."""
    replies.watch(pipe, entries_key(task_id))
    found: dict[str, str] = {}
    for field, value in pipe.hgetall(entries_key(task_id)).items():
        path, raw = replies.text(field), replies.text(value)
        try:
            found[path] = parse_entry(path, raw).to_json()
        except (ValueError, TypeError):
            continue  # refused when read: not handed on
    return found


def queue_inherit(pipe: Pipeline, task_id: str, entries: dict[str, str]) -> None:
    """In a transaction: give ``task_id`` the entries of :func:`watched_entries` (``retry
    --resume``), each blob claimed for it, so that the new task restores them and ``gc`` of the
    first task keeps them."""
    if not entries:
        return
    pipe.hset(entries_key(task_id), mapping=entries)  # type: ignore[arg-type]
    for raw in entries.values():
        pipe.sadd(users_key(json.loads(raw)["digest"]), task_id)


def claim(client: redis.Redis, task_id: str, digest: str) -> None:
    """Say that ``task_id`` uses blob ``digest``, before it is checked for or uploaded: a
    ``gc`` meanwhile then keeps it."""
    client.sadd(users_key(digest), task_id)


def record(client: redis.Redis, task_id: str, entry: OutputEntry) -> None:
    """Add or replace the task's entry for ``entry.path``; clears a note on that path."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(entries_key(task_id), entry.path, entry.to_json())
    pipe.hdel(notes_key(task_id), entry.path)
    pipe.sadd(users_key(entry.digest), task_id)
    pipe.execute()


def note(client: redis.Redis, task_id: str, path: str, reason: str, attempt: int) -> None:
    """Record why ``path`` (a file or a pattern) was not kept."""
    text = json.dumps({"reason": reason, "attempt": attempt, "at": round(time.time(), 3)})
    client.hset(notes_key(task_id), path, text)


def clear_note(client: redis.Redis, task_id: str, path: str) -> None:
    client.hdel(notes_key(task_id), path)


def remove(client: redis.Redis, task_ids: Iterable[str]) -> list[str]:
    """Delete the tasks' manifests; the digests no task uses any more (to delete from the
    store)."""
    unused: list[str] = []
    for task_id in task_ids:
        digests = {
            json.loads(replies.text(v)).get("digest")
            for v in client.hvals(entries_key(task_id))
            if _is_json_object(v)
        }
        pipe = client.pipeline(transaction=True)
        pipe.delete(entries_key(task_id), notes_key(task_id))
        valid = sorted(d for d in digests if isinstance(d, str) and _DIGEST.match(d))
        for digest in valid:
            pipe.srem(users_key(digest), task_id)
            pipe.scard(users_key(digest))
        replies_ = pipe.execute()
        left = replies_[2::2]
        unused.extend(d for d, count in zip(valid, left, strict=True) if count == 0)
    return unused


def _is_json_object(value: Any) -> bool:
    try:
        return isinstance(json.loads(replies.text(value)), dict)
    except ValueError:
        return False
