"""The venv environment: tasks run as local processes in venvs built with uv and cached by key.

The key hashes the interpreter (version and path), the normalized requirements and uv's
version, so a venv is built once and reused by every later task that needs the same thing.
Two tasks (in one agent or in two agents on one host) that need the same key at once do one
build: the second waits on the key's build lock, then reuses the result. The layout and the
eviction rules are in :mod:`overnight.agent.environments.venv.cache`.

A task holds its venv's in-use lock from ``prepare`` until its process has exited, so eviction
never removes a venv under a running task.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shutil
import subprocess
import threading
import time
import weakref
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from overnight.agent.config import AgentConfig
from overnight.agent.environments.base import Environment, Prepared, Process, RunRequest
from overnight.agent.progress import ProgressLine, StopCheck
from overnight.agent.environments.cachekeys import environment_key, normalize_requirements
from overnight.agent.environments.installs import TAIL_LINES, install_error, require_uv
from overnight.agent.environments.venv.cache import EnvRecord, VenvCache, tree_size
from overnight.agent.environments.venv.interpreters import Interpreter, find_interpreter, major_minor
from overnight.agent.run.isolation import TaskUser, TaskUsers, handed_over, seal
from overnight.agent.workspace.locks import FileLock
from overnight.agent.run.logbatch import Line, Output
from overnight.agent.run.process import LocalProcess
from overnight.agent.run.supervisor import CANCELED, supervise
from overnight.agent.run.taskenv import TaskEnv
from overnight.errors import (
    EnvironmentBuildError,
    LockTimeout,
    PreparationCanceled,
    InstallError,
    TaskRunError,
)
from overnight.spec import TaskSpec

UV_GRACE = 5.0  # seconds uv gets to stop after SIGTERM when a build is canceled


class VenvEnvironment(Environment):
    """Venvs under ``cache_dir``; tasks and builds get what ``env`` lets through of the agent's
    environment (default: the allowlist of this process's, see :mod:`overnight.agent.run.taskenv`).

    ``system_certs`` makes uv trust the platform's certificate store (``UV_SYSTEM_CERTS``), so
    installs work behind an inspecting proxy whose CA the system trusts; ``SSL_CERT_FILE`` in
    the agent's environment is honoured too. ``prepare`` passes uv's output to ``log`` from a helper
    thread (the runner's sender) while the calling thread waits.
    """

    name = "venv"

    def __init__(
        self,
        cache_dir: Path,
        *,
        max_envs: int = 20,
        max_gb: float | None = None,
        env: TaskEnv | None = None,
        uv_bin: str | None = None,
        system_certs: bool = True,
        task_users: TaskUsers | None = None,
    ) -> None:
        self.cache = VenvCache(cache_dir)
        self.max_envs = max_envs
        self.max_gb = max_gb
        env = env or TaskEnv(os.environ)
        self.base_env = env.task()
        self.build_env = env.build()
        self.uv_bin = uv_bin or require_uv()
        if task_users is not None:  # builds run as a task user, which must reach uv
            self.uv_bin = task_users.reachable(self.uv_bin, self.cache.root / "bin")
        self.system_certs = system_certs
        self.task_users = task_users
        self._interpreters: dict[str, Interpreter] = {}
        self._uv_version: str | None = None
        self._leases: dict[int, weakref.finalize[..., Prepared]] = {}
        self._memo_lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: AgentConfig,
        environ: Mapping[str, str],
        *,
        task_users: TaskUsers | None = None,
    ) -> VenvEnvironment:
        """The environment an agent with ``config`` runs; ``environ`` is the agent's own, of
        which tasks see an allowlist, and ``task_users`` the uids tasks run as (None: its own)."""
        return cls(
            config.cache_path,
            max_envs=config.max_envs,
            max_gb=config.max_env_gb,
            env=TaskEnv.from_config(config, environ),
            task_users=task_users,
        )

    # -- what defines an environment -------------------------------------------------------

    def interpreter(self, recorded: str) -> Interpreter:
        """The interpreter for a recorded Python version (looked up once per major.minor)."""
        wanted = major_minor(recorded) or recorded
        with self._memo_lock:
            if wanted not in self._interpreters:
                self._interpreters[wanted] = self._find_interpreter(recorded)
            return self._interpreters[wanted]

    def _find_interpreter(self, recorded: str) -> Interpreter:
        users = self.task_users
        if users is None:
            return find_interpreter(recorded, uv_bin=self.uv_bin, environ=self.build_env)
        found = find_interpreter(
            recorded, uv_bin=self.uv_bin, environ=self.build_env, usable=users.can_run
        )
        if not users.can_run(found.path):
            raise EnvironmentBuildError(
                f"no Python the task user ({users.setting}) may run: {found.path} is out of its "
                f"reach; install Python {major_minor(recorded) or recorded} where every user "
                "may run it (/usr/bin, /opt), or run the agent without task_user"
            )
        return found

    @property
    def uv_version(self) -> str:
        if self._uv_version is None:
            try:
                out = subprocess.run(
                    [self.uv_bin, "--version"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                    env=self._uv_env(),
                ).stdout
                self._uv_version = out.split()[1]
            except (OSError, subprocess.SubprocessError, IndexError) as exc:
                raise EnvironmentBuildError(
                    f"uv at {self.uv_bin} does not run ({exc}); install it on the agent "
                    "with `pip install uv`"
                ) from exc
        return self._uv_version

    def key(self, spec: TaskSpec, *, image: str | None = None) -> str:
        interp = self.interpreter(spec.python)
        return self._key(interp, normalize_requirements(spec.requirements.text))

    def _key(self, interp: Interpreter, requirements: str) -> str:
        return environment_key("venv", interp.version, interp.path, requirements, self.uv_version)

    # -- prepare -----------------------------------------------------------------------------

    def prepare(
        self, spec: TaskSpec, log: ProgressLine, should_stop: StopCheck, *, image: str | None = None
    ) -> Prepared:
        if image:
            log(f"[overnight] warning: image {image} ignored: this agent runs venvs")
        interp = self.interpreter(spec.python)
        if interp.warning:
            log(f"[overnight] {interp.warning}")
        requirements = normalize_requirements(spec.requirements.text)
        key = self._key(interp, requirements)
        lease = self.cache.use_lock(key)
        if not lease.acquire(should_stop=should_stop):
            raise PreparationCanceled("canceled while waiting for the venv cache")
        try:
            record, built = self._ensure(key, interp, requirements, log, should_stop)
            self.cache.touch(key)
        except BaseException:
            lease.release()
            raise
        venv = self.cache.path(key)
        prepared = Prepared(
            key=key,
            built=built,
            python=interp.version,
            details={
                "venv": str(venv),
                "venv_python": str(venv / "bin" / "python"),
                "interpreter": interp.path,
                "interpreter_source": interp.source,
                "installed": list(record.packages) if built else [],
                "record": record.to_dict(),
            },
            warnings=(interp.warning,) if interp.warning else (),
        )
        self._leases[id(prepared)] = weakref.finalize(
            prepared, self._drop_lease, id(prepared), lease
        )
        try:
            removed = self.evict(keep={key})
        except OSError as exc:
            log(f"[overnight] could not evict old venvs from the cache: {exc}")
        else:
            if removed:
                log(f"[overnight] removed {len(removed)} least recently used venv(s)")
        return prepared

    def evict(self, keep: Collection[str] = ()) -> list[str]:
        """Remove least recently used venvs not in use until within ``max_envs``/``max_gb``."""
        return self.cache.evict(max_envs=self.max_envs, max_gb=self.max_gb, keep=keep)

    def _ensure(
        self, key: str, interp: Interpreter, requirements: str, log: ProgressLine, stop: StopCheck
    ) -> tuple[EnvRecord, bool]:
        record = self.cache.record(key)
        if record is not None:
            log(f"[overnight] reusing venv {key} (Python {record.python})")
            return record, False
        lock = self.cache.build_lock(key)
        if not lock.try_acquire():
            log(f"[overnight] another task is building venv {key}; waiting for it")
            if not lock.acquire(should_stop=stop):
                raise PreparationCanceled("canceled while waiting for the venv build")
        try:
            record = self.cache.record(key)
            if record is not None:
                log(f"[overnight] reusing venv {key}, just built by another task")
                return record, False
            return self._build(key, interp, requirements, log, stop), True
        finally:
            lock.release()

    def _build(
        self, key: str, interp: Interpreter, requirements: str, log: ProgressLine, stop: StopCheck
    ) -> EnvRecord:
        started = time.monotonic()
        count = len(requirements.splitlines())
        log(f"[overnight] building venv {key}: Python {interp.version}, {count} requirement(s)")
        folder = self.cache.new_build_dir(key)
        work = folder.with_name(f"{folder.name}.work")  # the listing; a build user's uv cache
        builder = self._builder()
        try:
            build = _Build(self._uv_env(), builder)
            if builder is None:
                work.mkdir()
            else:  # sdists' setup.py runs as a task user too, in folders of its own
                handed_over(folder, builder)
                handed_over(work, builder)
                build.env.update(UV_CACHE_DIR=str(work), HOME=str(work))
            self._uv(
                ["venv", "--relocatable", "--python", interp.path, str(folder)],
                build,
                log,
                stop,
                "creating the venv",
            )
            python = folder / "bin" / "python"
            if requirements:
                listing = work / "overnight-requirements.txt"
                listing.write_text(requirements)
                listing.chmod(0o644)
                self._uv(
                    ["pip", "install", "--python", str(python), "-r", str(listing)],
                    build,
                    log,
                    stop,
                    "installing the requirements",
                    failure=InstallError,
                )
            packages = self._freeze(python, build)
            if builder is not None:
                made_by, builder = builder, None
                self._give_back(made_by)  # what the build left running goes first
                seal(folder, made_by)
            record = EnvRecord(
                key=key,
                python=interp.version,
                interpreter=interp.path,
                requirements=requirements,
                uv_version=self.uv_version,
                packages=packages,
                created=time.time(),
                build_seconds=round(time.monotonic() - started, 3),
                size_bytes=tree_size(folder),
            )
            self.cache.commit(key, folder, record)
        except OSError as exc:
            raise EnvironmentBuildError(f"cannot build venv {key}: {exc}") from exc
        finally:
            if builder is not None:
                self._give_back(builder)
            shutil.rmtree(folder, ignore_errors=True)  # gone already when committed
            shutil.rmtree(work, ignore_errors=True)
        log(f"[overnight] venv {key} built in {record.build_seconds:.1f}s")
        return record

    def _builder(self) -> TaskUser | None:
        if self.task_users is None:
            return None
        return self.task_users.take(EnvironmentBuildError)

    def _give_back(self, user: TaskUser) -> None:
        if self.task_users is not None:
            self.task_users.give_back(user)

    def _uv(
        self,
        args: Sequence[str],
        build: _Build,
        log: ProgressLine,
        stop: StopCheck,
        what: str,
        failure: type[EnvironmentBuildError] = EnvironmentBuildError,
    ) -> None:
        """Run uv with its output in the task's log; stop it within ~0.1 s of a cancel. A
        failure raises ``failure`` naming what uv said failed."""
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

        def sink(batch: Sequence[Line]) -> None:
            for _, text in batch:
                tail.append(text)
                with contextlib.suppress(Exception):  # a failing log must not fail the build
                    log(Output(text))

        process = LocalProcess(
            [self.uv_bin, *args], cwd=self.cache.root, env=build.env, user=build.ids
        )
        outcome = supervise(process, sink, should_stop=stop, timeout=None, grace=UV_GRACE)
        if outcome.reason == CANCELED:
            raise PreparationCanceled(f"canceled while {what}")
        if outcome.exit_code != 0:
            fix = (
                "fix the requirements and enqueue again (a retry reuses these)"
                if failure is InstallError
                else "uv's output is in the task's log"
            )
            raise failure(
                f"{what} failed (uv exited with {outcome.exit_code}): {install_error(tail)}; {fix}"
            )

    def _freeze(self, python: Path, build: _Build) -> tuple[str, ...]:
        # uv runs the venv's python, whose site-packages the build wrote: as the build's user
        proc = subprocess.run(
            [self.uv_bin, "pip", "freeze", "--python", str(python)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=build.env,
            cwd=self.cache.root,
            **build.popen_user(),
        )
        return tuple(line for line in proc.stdout.splitlines() if line.strip())

    def _uv_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.build_env.items() if k not in ("VIRTUAL_ENV", "UV_PYTHON")}
        env.update(
            UV_CACHE_DIR=str(self.cache.uv_cache),
            UV_PYTHON_DOWNLOADS="never",
            NO_COLOR="1",
        )
        if self.system_certs:
            env["UV_SYSTEM_CERTS"] = "1"
        return env

    # -- start -------------------------------------------------------------------------------

    def start(self, prepared: Prepared, request: RunRequest) -> Process:
        lease = self.cache.use_lock(prepared.key)
        try:
            lease.acquire(timeout=120)
        except LockTimeout as exc:
            raise TaskRunError(f"venv {prepared.key} is locked: {exc}") from exc
        user: TaskUser | None = None
        released = threading.Event()

        def release(_code: int = 0) -> None:
            if released.is_set():
                return  # once: a uid given back twice could go to two tasks
            released.set()
            lease.release()
            if user is not None and self.task_users is not None:
                self.task_users.give_back(user)

        try:
            if self.cache.record(prepared.key) is None:
                raise TaskRunError(
                    f"venv {prepared.key} left the cache before the task started; retry the task"
                )
            user = self._task_user(request)
            env = self.task_env(prepared, request)
            if user is not None:
                env.update(user.environ(request.workspace))
            process = LocalProcess(
                request.argv,
                cwd=request.workspace / request.workdir,
                env=env,
                on_exit=release,
                user=(user.uid, user.gid) if user is not None else None,
                umask=self.task_users.umask if self.task_users is not None else -1,
            )
        except BaseException:
            release()
            raise
        weakref.finalize(process, release)
        finalizer = self._leases.pop(id(prepared), None)
        if finalizer is not None:
            finalizer()  # the process holds the venv now; the prepare lease can go
        return process

    def task_env(self, prepared: Prepared, request: RunRequest) -> dict[str, str]:
        """The base env, then the task's env, with the venv activated."""
        venv = self.cache.path(prepared.key)
        env = dict(self.base_env)
        env.update(request.env)
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
        env.setdefault("PYTHONUNBUFFERED", "1")  # prints reach the log as they happen
        return env

    def _task_user(self, request: RunRequest) -> TaskUser | None:
        """The uid the task runs as (its tree handed to it), or None: the agent's own."""
        if self.task_users is None:
            return None
        user = self.task_users.take(TaskRunError)
        try:
            user.own(request.workspace)
        except OSError as exc:
            self.task_users.give_back(user)
            raise TaskRunError(f"cannot hand the task's tree to uid {user.uid}: {exc}") from exc
        return user

    def _drop_lease(self, ident: int, lease: FileLock) -> None:
        self._leases.pop(ident, None)
        lease.release()


@dataclasses.dataclass
class _Build:
    """How uv runs for one build: its environment and user (None: the agent's own)."""

    env: dict[str, str]
    user: TaskUser | None

    @property
    def ids(self) -> tuple[int, int] | None:
        return (self.user.uid, self.user.gid) if self.user is not None else None

    def popen_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
