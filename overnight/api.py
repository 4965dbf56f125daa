"""The Python API for scripts and notebooks: :class:`Client`, and ``enqueue``, ``get``,
``compare`` and ``snapshot`` for one call each.

Settings come as for the CLI: arguments > ``OVERNIGHT_*`` environment > config file > defaults.

    >>> import overnight
    >>> client = overnight.Client(redis_url="redis://gpu-box:6379/0")
    >>> [task] = client.enqueue("python train.py --lr 0.01", queue="gpu", note="baseline")
    >>> runs = client.enqueue(["python", "train.py"], sweep={"lr": [0.1, 0.01]})
    >>> client.wait([task.id])[0].status
    >>> print(client.compare(runs[0].id, runs[1].id).pairs[0].code.patch)
    >>> overnight.snapshot("python train.py").spec.repo.commit  # no Redis needed
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from overnight.comparison.report import Comparison, compare_runs
from overnight.config import ClientConfig, load_client_config
from overnight.errors import OvernightWarning, TaskNotFound, WaitTimeout
from overnight.outputs import manifest
from overnight.outputs.manifest import Manifest
from overnight.outputs.pull import Progress, PullReport
from overnight.outputs.pull import pull as pull_outputs
from overnight.outputs.stores import open_store
from overnight.queue.cancel import request_cancel
from overnight.queue.index import Query
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskRecord, TaskStatus
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep, task_options
from overnight.queue.sweeps import Sweep
from overnight.recorder.account import review
from overnight.recorder.scriptargs import declared_params
from overnight.recorder.snapshot import SnapshotOptions, record
from overnight.spec import Snapshot

_REAP_EVERY = 30.0  # seconds between reaps while waiting, as `overnight wait` does


class Client:
    """One Redis connection, reused by every call; a read never writes.

    ``redis_url`` (else ``OVERNIGHT_REDIS_URL``, the config file, or localhost) is connected to on
    the first call. Tasks whose agent vanished are marked lost only by :meth:`reap` and by
    :meth:`wait`, which says so. Use it as a context manager, or :meth:`close` it.
    """

    def __init__(self, redis_url: str | None = None, *, config: ClientConfig | None = None) -> None:
        self.config = config or load_client_config(flags={"redis_url": redis_url})
        self._store: TaskStore | None = None

    @property
    def store(self) -> TaskStore:
        """The task store on this client's connection (made on first use)."""
        if self._store is None:
            self._store = TaskStore.from_config(self.config)
        return self._store

    def enqueue(
        self,
        command: str | Sequence[str],
        *,
        queue: str | None = None,
        gpus: int | None = None,
        image: str | None = None,
        timeout: float | str | None = None,
        grace: float | str | None = None,
        expect: float | str | None = None,
        front: bool = False,
        retries: int = 0,
        retry_on: str | Sequence[str] | None = None,
        after: Sequence[str] = (),
        sweep: Mapping[str, Sequence[object]] | None = None,
        add_params: bool = False,
        name: str | None = None,
        note: str = "",
        tags: Sequence[str] = (),
        env: Sequence[str] = (),
        requirements: str | Path | None = None,
        outputs: Sequence[str] = (),
        metrics: Sequence[str] = (),
        allow_secret_env: bool = False,
        allow_secret_files: bool = False,
        max_snapshot_mb: float | None = None,
        max_untracked_file_mb: float | None = None,
        cwd: str | Path | None = None,
        notify: Sequence[str] = (),
        notify_metric: str | None = None,
    ) -> list[TaskRecord]:
        """Snapshot the working tree at ``cwd`` (default: here) and queue ``command``, as
        ``overnight enqueue`` does; each argument is the flag of its name.

        Returns the new task's record in a list, or with ``sweep`` ({"lr": [0.1, 0.01], ...})
        the records of the cross product; a sweep's names must be params of the command (its
        options, or those its script declares) unless ``add_params``. ``timeout``, ``grace``
        (SIGTERM to SIGKILL) and ``expect`` (how long it is expected to run) are seconds or
        durations such as "8h"; ``front`` queues it ahead of the tasks already queued.
        ``gpus`` defaults as for ``overnight enqueue`` (:meth:`ClientConfig.gpus_for`);
        ``retries`` runs it again when it fails with a kind of ``retry_on`` ("infra,oom"; default
        infra: its agent vanished); ``notify`` adds to the client's notify targets. The
        recording arguments (``outputs`` globs, ``metrics`` files and the rest) are
        :func:`snapshot`'s, and so are its warnings, issued before anything queues. Raises
        OvernightError subclasses, as the CLI reports them.
        """
        options = task_options(
            self.store, self.config, queue=queue, gpus=gpus, image=image, timeout=timeout,
            retries=retries, after=after, grace=grace, expect=expect, retry_on=retry_on,
            notify=notify, notify_metric=notify_metric,
        )  # fmt: skip
        taken = snapshot(
            command, name=name, note=note, tags=tags, env=env, requirements=requirements,
            outputs=outputs, metrics=metrics, allow_secret_env=allow_secret_env,
            allow_secret_files=allow_secret_files, max_snapshot_mb=max_snapshot_mb,
            max_untracked_file_mb=max_untracked_file_mb, cwd=cwd, config=self.config,
        )  # fmt: skip
        sweeps = [Sweep(k, tuple(str(v) for v in values)) for k, values in (sweep or {}).items()]
        where = Path(cwd) if cwd is not None else Path.cwd()
        declared = declared_params(taken.spec.argv, where) if sweeps else ()
        return submit_sweep(
            self.store, taken, options, sweeps, name=taken.spec.name, declared=declared,
            add_params=add_params, at_front=front,
        )  # fmt: skip

    def get(self, task_id: str) -> TaskRecord:
        """The record of a task, by id or unambiguous id prefix; nothing is written."""
        return self.store.get(self.store.resolve(task_id))

    def ls(
        self,
        *,
        queue: str | None = None,
        status: TaskStatus | str | Collection[TaskStatus | str] = (),
        tag: str | None = None,
        sweep: str | None = None,
        limit: int | None = 50,
    ) -> list[TaskRecord]:
        """Tasks, newest first, as ``overnight ls`` lists them (but without reaping first);
        ``sweep`` is a sweep id (or prefix, or the id of one of its tasks)."""
        wanted = [status] if isinstance(status, str) else list(status)
        statuses = frozenset(TaskStatus(s) for s in wanted)
        found = self.store.resolve_sweep(sweep) if sweep is not None else None
        query = Query(queue=queue, statuses=statuses, tag=tag, sweep=found, limit=limit)
        return self.store.find(query)

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued or waiting task now; ask the agent of a started one to stop it."""
        return request_cancel(self.store, self.store.resolve(task_id))

    def wait(
        self, task_ids: Sequence[str], *, timeout: float | None = None, poll: float = 0.5
    ) -> list[TaskRecord]:
        """Wait until the tasks end; returns their final records in the order given.

        Reaps lost tasks now and then, as ``overnight wait`` does, so that a task whose agent
        died ends the wait. Raises :class:`WaitTimeout` after ``timeout`` seconds, and
        :class:`TaskNotFound` for a task removed meanwhile (``overnight gc``).
        """
        ids = [self.store.resolve(t) for t in task_ids]
        start = last_reap = time.monotonic()
        while True:
            records = self.store.get_many(ids)
            if len(records) == len(ids) and all(r.status.is_final for r in records):
                return records
            gone = set(ids) - {r.id for r in records}
            if gone:
                raise TaskNotFound(
                    f"task {sorted(gone)[0]} was removed from Redis while waited for"
                )
            if timeout is not None and time.monotonic() - start > timeout:
                left = ", ".join(r.id for r in records if not r.status.is_final)
                raise WaitTimeout(
                    f"gave up waiting for {left} after {timeout:g} s; wait again, or pass a "
                    "longer timeout"
                )
            time.sleep(poll)
            if time.monotonic() - last_reap > _REAP_EVERY:
                self.reap()
                last_reap = time.monotonic()

    def compare(
        self,
        *task_ids: str,
        stat_only: bool = False,
        cwd: str | Path | None = None,
        allow_local_repos: bool = False,
    ) -> Comparison:
        """Compare two or more tasks as ``overnight compare`` does: ``.rows`` side by side,
        ``.pairs`` each run's code (``.code.patch``, ``.code.files``) and requirements against
        the first's. Commits come from the repository at ``cwd`` (default: here), the runs'
        bundles or their remote; a remote that is a local path is fetched only with
        ``allow_local_repos``."""
        return compare_runs(
            self.store,
            task_ids,
            local_repo=Path(cwd) if cwd is not None else Path.cwd(),
            allow_local=allow_local_repos,
            stat_only=stat_only,
        )

    def logs(self, task_id: str, *, tail: int | None = None) -> list[str]:
        """The task's output lines so far (the last ``tail`` of them when given)."""
        task_id = self.store.resolve(task_id)
        logs = self.store.logs
        entries = logs.tail(task_id, tail) if tail is not None else logs.read(task_id)
        return [e.line for e in entries]

    def outputs(self, task_id: str) -> Manifest:
        """The task's stored output files (path, size, digest, when, attempt) and the notes of
        those not kept; nothing is written."""
        return manifest.read(self.store.redis, self.store.resolve(task_id))

    def pull(
        self, task_id: str, *, to: str | Path | None = None, progress: Progress | None = None
    ) -> PullReport:
        """Download the task's outputs to ``to`` (default ``./overnight-outputs/<id>/``),
        skipping files already identical there; run it again to resume an interrupted pull."""
        found = self.outputs(task_id)
        dest = Path(to) if to is not None else Path("overnight-outputs") / found.task_id
        store = open_store(self.config.output_store, self.store.redis)
        return pull_outputs(store, found, dest, progress)

    def reap(self) -> list[str]:
        """Mark lost the running tasks whose agent stopped sending heartbeats; their ids."""
        return reap_lost(self.store)

    def close(self) -> None:
        if self._store is not None:
            self._store.redis.close()
            self._store = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def enqueue(
    command: str | Sequence[str],
    *,
    queue: str | None = None,
    gpus: int | None = None,
    image: str | None = None,
    timeout: float | str | None = None,
    grace: float | str | None = None,
    expect: float | str | None = None,
    front: bool = False,
    retries: int = 0,
    retry_on: str | Sequence[str] | None = None,
    after: Sequence[str] = (),
    sweep: Mapping[str, Sequence[object]] | None = None,
    add_params: bool = False,
    name: str | None = None,
    note: str = "",
    tags: Sequence[str] = (),
    env: Sequence[str] = (),
    requirements: str | Path | None = None,
    outputs: Sequence[str] = (),
    metrics: Sequence[str] = (),
    allow_secret_env: bool = False,
    allow_secret_files: bool = False,
    max_snapshot_mb: float | None = None,
    max_untracked_file_mb: float | None = None,
    cwd: str | Path | None = None,
    notify: Sequence[str] = (),
    notify_metric: str | None = None,
    redis_url: str | None = None,
) -> list[TaskRecord]:
    """:meth:`Client.enqueue` on a client of its own."""
    with Client(redis_url) as client:
        return client.enqueue(
            command, queue=queue, gpus=gpus, image=image, timeout=timeout, grace=grace,
            expect=expect, front=front, retries=retries, retry_on=retry_on, after=after,
            sweep=sweep, add_params=add_params, name=name, note=note, tags=tags, env=env,
            requirements=requirements, outputs=outputs, metrics=metrics,
            allow_secret_env=allow_secret_env, allow_secret_files=allow_secret_files,
            max_snapshot_mb=max_snapshot_mb, max_untracked_file_mb=max_untracked_file_mb,
            cwd=cwd, notify=notify, notify_metric=notify_metric,
        )  # fmt: skip


def pull(task_id: str, *, to: str | Path | None = None, redis_url: str | None = None) -> PullReport:
    """:meth:`Client.pull` on a client of its own: a task's outputs, downloaded."""
    with Client(redis_url) as client:
        return client.pull(task_id, to=to)


def compare(*task_ids: str, stat_only: bool = False, redis_url: str | None = None) -> Comparison:
    """:meth:`Client.compare` on a client of its own: the first task against each other."""
    with Client(redis_url) as client:
        return client.compare(*task_ids, stat_only=stat_only)


def get(task_id: str, *, redis_url: str | None = None) -> TaskRecord:
    """:meth:`Client.get` on a client of its own: the record of a task, by id or id prefix."""
    with Client(redis_url) as client:
        return client.get(task_id)


def snapshot(
    command: str | Sequence[str],
    *,
    name: str | None = None,
    note: str = "",
    tags: Sequence[str] = (),
    env: Sequence[str] = (),
    requirements: str | Path | None = None,
    outputs: Sequence[str] = (),
    metrics: Sequence[str] = (),
    allow_secret_env: bool = False,
    allow_secret_files: bool = False,
    max_snapshot_mb: float | None = None,
    max_untracked_file_mb: float | None = None,
    cwd: str | Path | None = None,
    config: ClientConfig | None = None,
) -> Snapshot:
    """What ``enqueue`` would record for ``command`` at ``cwd`` (default: here), without Redis,
    as ``overnight snapshot`` does; each argument is the flag of its name.

    ``outputs`` are globs of the files to bring home (besides the ``outputs`` setting's),
    ``metrics`` the metrics files the run writes, both relative to the repository root.
    ``snapshot(...).spec`` is the task spec; ``.to_json()`` its JSON form, as
    ``overnight snapshot --json`` prints it. Raises SnapshotError subclasses
    (:class:`~overnight.errors.MissingScriptError` for a script not in the recorded tree);
    what the CLI warns of (a file the command names that the worker will not have, a
    requirements freeze) is issued as an :class:`~overnight.errors.OvernightWarning`.
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    choices = SnapshotOptions.from_config(
        config or load_client_config(),
        requirements_file=Path(requirements) if requirements is not None else None,
        env=env, note=note, tags=tags, outputs=outputs, metric_files=metrics, name=name,
        allow_secret_env=allow_secret_env, allow_secret_files=allow_secret_files,
        max_snapshot_mb=max_snapshot_mb, max_untracked_file_mb=max_untracked_file_mb,
    )  # fmt: skip
    where = Path(cwd) if cwd is not None else Path.cwd()
    recording = record(where, argv, choices, dict(os.environ))
    _warn(review(recording, quiet=True).warnings)  # a missing script raises here
    return recording.snapshot


def _warn(messages: Sequence[str]) -> None:
    """Issue each message as an :class:`OvernightWarning` at the first caller outside this
    module, so that it names the user's line (and filters on that line apply)."""
    frame: FrameType | None = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    for message in messages:
        warnings.warn(message, OvernightWarning, stacklevel=level)
