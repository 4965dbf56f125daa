"""The Python API for scripts and notebooks: ``overnight.enqueue``, ``get`` and ``snapshot``.

Settings come as for the CLI: arguments > ``OVERNIGHT_*`` environment > config file > defaults.

    >>> import overnight
    >>> [task] = overnight.enqueue("python train.py --lr 0.01", queue="gpu", note="baseline")
    >>> runs = overnight.enqueue(["python", "train.py"], sweep={"lr": [0.1, 0.01]})
    >>> overnight.get(task.id).status
    >>> overnight.snapshot("python train.py").spec.repo.commit  # no Redis needed
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from overnight.config import ClientConfig, load_client_config
from overnight.errors import ConfigError
from overnight.queue.durations import parse_duration
from overnight.queue.reaper import reap_lost
from overnight.queue.records import TaskOptions, TaskRecord
from overnight.queue.store import TaskStore
from overnight.queue.submit import submit_sweep
from overnight.queue.sweeps import Sweep
from overnight.recorder.snapshot import SnapshotOptions, take_snapshot
from overnight.spec import Snapshot


def enqueue(
    command: str | Sequence[str],
    *,
    queue: str | None = None,
    gpus: int | None = None,
    image: str | None = None,
    timeout: float | str | None = None,
    retries: int = 0,
    after: Sequence[str] = (),
    sweep: Mapping[str, Sequence[object]] | None = None,
    name: str | None = None,
    note: str = "",
    tags: Sequence[str] = (),
    env: Sequence[str] = (),
    requirements: str | Path | None = None,
    cwd: str | Path | None = None,
    redis_url: str | None = None,
) -> list[TaskRecord]:
    """Snapshot the working tree at ``cwd`` (default: here) and queue ``command``.

    Returns the new task's record in a list, or with ``sweep`` ({"lr": [0.1, 0.01], ...}) the
    records of the cross product. ``timeout`` is seconds or a duration such as "8h". ``gpus``
    defaults as for ``overnight enqueue`` (see :func:`default_gpus`); ``retries`` requeues the
    task when its agent vanishes, not when it fails. Raises OvernightError subclasses, as the CLI
    reports them.
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    config = load_client_config(flags={"redis_url": redis_url})
    store = TaskStore.from_config(config)
    reap_lost(store)
    options = task_options(
        store, config, queue=queue, gpus=gpus, image=image, timeout=timeout, retries=retries,
        after=after,
    )  # fmt: skip
    recording = _snapshot_options(config, requirements, env, note, tags, name)
    sweeps = [Sweep(k, tuple(str(v) for v in values)) for k, values in (sweep or {}).items()]
    where = Path(cwd) if cwd is not None else Path.cwd()
    return submit_command(store, where, argv, options, recording, sweeps)


def snapshot(
    command: str | Sequence[str],
    *,
    name: str | None = None,
    note: str = "",
    tags: Sequence[str] = (),
    env: Sequence[str] = (),
    requirements: str | Path | None = None,
    cwd: str | Path | None = None,
) -> Snapshot:
    """What ``enqueue`` would record for ``command`` at ``cwd`` (default: here), without Redis.

    ``snapshot(...).spec`` is the task spec; ``.to_json()`` its JSON form, as
    ``overnight snapshot --json`` prints it. Raises SnapshotError subclasses.
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    config = load_client_config()
    recording = _snapshot_options(config, requirements, env, note, tags, name)
    where = Path(cwd) if cwd is not None else Path.cwd()
    return take_snapshot(where, argv, recording, dict(os.environ))


def _snapshot_options(
    config: ClientConfig,
    requirements: str | Path | None,
    env: Sequence[str],
    note: str,
    tags: Sequence[str],
    name: str | None,
) -> SnapshotOptions:
    return SnapshotOptions(
        requirements_file=Path(requirements) if requirements is not None else None,
        env=tuple(env),
        note=note,
        tags=tuple(tags),
        name=name,
        max_snapshot_mb=config.max_snapshot_mb,
        max_untracked_file_mb=config.max_untracked_file_mb,
    )


def get(task_id: str, *, redis_url: str | None = None) -> TaskRecord:
    """The record of a task, by id or unambiguous id prefix."""
    store = TaskStore.from_config(load_client_config(flags={"redis_url": redis_url}))
    reap_lost(store)
    return store.get(store.resolve(task_id))


def task_options(
    store: TaskStore,
    config: ClientConfig,
    *,
    queue: str | None,
    gpus: int | None,
    image: str | None,
    timeout: float | str | None,
    retries: int,
    after: Sequence[str],
    grace: float | str | None = None,
) -> TaskOptions:
    """How to run the task, with durations parsed, ``after`` prefixes resolved and ``gpus``
    (None: not given) defaulted by queue."""
    queue = queue or config.default_queue
    return TaskOptions(
        queue=queue,
        gpus=default_gpus(config, queue) if gpus is None else gpus,
        image=image,
        timeout=parse_duration(timeout, what="--timeout") if isinstance(timeout, str) else timeout,
        retries=retries,
        after=tuple(store.resolve(a) for a in after),
        grace=parse_duration(grace, what="--grace") if isinstance(grace, str) else grace,
    )


def default_gpus(config: ClientConfig, queue: str) -> int:
    """GPUs a task on ``queue`` asks for when none are named: ``default_gpus`` when configured,
    else 0 on a CPU queue (listed in ``cpu_queues``, or named ``cpu...``) and 1 on the others."""
    if config.default_gpus is not None:
        if config.default_gpus < 0:
            raise ConfigError(f"default_gpus must be 0 or more, not {config.default_gpus}")
        return config.default_gpus
    return 0 if is_cpu_queue(config, queue) else 1


def is_cpu_queue(config: ClientConfig, queue: str) -> bool:
    return queue in config.cpu_queues or queue.lower().startswith("cpu")


def submit_command(
    store: TaskStore,
    cwd: Path,
    argv: Sequence[str],
    options: TaskOptions,
    snapshot_options: SnapshotOptions,
    sweeps: Sequence[Sweep] = (),
) -> list[TaskRecord]:
    """Snapshot ``cwd`` for ``argv`` and enqueue it (once, or once per sweep combination)."""
    snapshot = take_snapshot(cwd, argv, snapshot_options, dict(os.environ))
    return submit_sweep(store, snapshot, options, sweeps, name=snapshot.spec.name)
