"""What a task can reach on its agent's host besides its own tree.

The agent's folders (``workspace_dir``, ``cache_dir``, ``spill_dir``) are its own from its start,
whatever the umask (:func:`private_folders`): 0700, so no other local user reads the mirrors,
trees, venvs or held logs. A venv task runs with the agent's uid unless the agent (run as root)
has a ``task_user`` (:class:`TaskUsers`): one uid, or a range of them so that each running task
has its own. The workspace and cache roots and their ``tasks`` and ``envs`` folders are then
0711 (entered, never listed) and all else in them stays 0700; a task's tree is handed to its
uid, its venv is readable by all. Such a task cannot read the agent's files, its
``/proc/<pid>/environ``, the mirrors, or (with a range) other tasks' trees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pwd
import shutil
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from overnight.errors import ConfigError

log = logging.getLogger(__name__)

PRIVATE, PASSAGE = 0o700, 0o711
PASSAGES = ("tasks", "envs", "tmp", "bin")
"""The folders under the workspace and cache roots a task user passes through (its tree, its
venv, the venv it builds, uv); their other children are 0700."""
WORKSPACE_FOLDERS = ("tasks", "mirrors", "trees", "task-locks", "kept")
"""Made at the start, so none is ever made later with the umask's mode under a 0711 root."""


def private_folders(
    roots: Iterable[Path],
    *,
    shared: Mapping[Path, Iterable[str]] | None = None,
    users: TaskUsers | None = None,
) -> None:
    """Make ``roots`` the agent's alone: 0700. When tasks run as ``users``, the roots in
    ``shared`` (each with the child folders to make now) are 0711 instead, every child folder
    in them 0700 but ``tasks`` and ``envs`` (0711), and files in them the agent's alone.

    Raises ConfigError when a task user could not reach a shared root (a parent folder it may
    not enter, such as a 0700 home directory).
    """
    passages = {Path(r): tuple(made) for r, made in (shared or {}).items()}
    if users is None:
        passages = {}
    for root in map(Path, roots):
        root.mkdir(parents=True, exist_ok=True)
        if root not in passages:
            _chmod(root, PRIVATE)
            continue
        assert users is not None
        blocked = users.blocked(root.parent)
        if blocked is not None:
            raise ConfigError(
                f"task_user {users.setting}: that user cannot enter {blocked}, above {root}; put "
                "workspace_dir and cache_dir under a folder every user may enter "
                "(e.g. /var/lib/overnight), or run without task_user"
            )
        _chmod(root, PASSAGE)
        for name in passages[root]:
            (root / name).mkdir(exist_ok=True)
        for child in root.iterdir():
            if child.is_symlink():
                continue
            if child.is_dir():
                _chmod(child, PASSAGE if child.name in PASSAGES else PRIVATE)
            else:
                _chmod(child, stat.S_IMODE(child.stat().st_mode) & PRIVATE)


def seal(tree: Path, builder: TaskUser) -> None:
    """Hand ``tree``, which ``builder`` made (a venv), to the agent: owned by it, read-only to
    every other user, without setuid, setgid or sticky bits.

    Walked through directory descriptors and never through a symlink, so a build process still
    running cannot redirect it elsewhere; raises OSError for an entry the build did not make (a
    hard link to another user's file).
    """
    uid, gid = os.getuid(), os.getgid()
    sealed: set[tuple[int, int]] = set()

    def take(fd: int, name: str) -> None:
        info = os.fstat(fd)
        if info.st_uid != builder.uid and (info.st_dev, info.st_ino) not in sealed:
            raise OSError(f"{name} in {tree} was not made by the build (uid {info.st_uid})")
        os.fchown(fd, uid, gid)
        extra = 0o555 if stat.S_ISDIR(info.st_mode) else 0o444
        os.fchmod(fd, (stat.S_IMODE(info.st_mode) & 0o755) | extra)
        sealed.add((info.st_dev, info.st_ino))

    for _folder, dirs, files, dirfd in os.fwalk(tree, follow_symlinks=False):
        take(dirfd, _folder)
        for name in (*files, *dirs):
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
            elif stat.S_ISREG(info.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
                try:
                    take(fd, name)
                finally:
                    os.close(fd)
            elif not stat.S_ISDIR(info.st_mode):  # a fifo or socket: nothing a venv needs
                os.unlink(name, dir_fd=dirfd)


def handed_over(folder: Path, user: TaskUser) -> Path:
    """``folder``, made now and owned by ``user``, 0700."""
    folder.mkdir(mode=PRIVATE)
    os.chown(folder, user.uid, user.gid)
    os.chmod(folder, PRIVATE)
    return folder


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as exc:  # not the agent's (shared with another user): say so, go on
        log.warning("cannot make %s private (mode %o): %s", path, mode, exc)


@dataclasses.dataclass(frozen=True)
class TaskUser:
    """One uid a venv task runs as, with its group and no supplementary groups."""

    uid: int
    gid: int
    name: str
    home: str | None  # its passwd home, when that folder exists

    def may_enter(self, folder: Path) -> bool:
        """Whether this user may pass through ``folder`` (its x bit for them)."""
        try:
            info = folder.stat()
        except OSError:
            return False
        mode = info.st_mode
        if info.st_uid == self.uid:
            return bool(mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(mode & stat.S_IXGRP)
        return bool(mode & stat.S_IXOTH)

    def can_run(self, program: str) -> bool:
        """Whether this user may run ``program`` (every folder above it entered, the file
        readable and executable; symlinks followed)."""
        real = Path(os.path.realpath(program))
        for path in (Path(program), real):
            if self.blocked(path.parent) is not None:
                return False
        try:
            mode = real.stat().st_mode
        except OSError:
            return False
        return bool(mode & stat.S_IROTH and mode & stat.S_IXOTH)

    def blocked(self, folder: Path) -> Path | None:
        """The first folder from / down to ``folder`` this user may not enter, if any."""
        folder = Path(os.path.abspath(folder))
        for path in (*reversed(folder.parents), folder):
            if not self.may_enter(path):
                return path
        return None

    def own(self, tree: Path) -> None:
        """Hand ``tree`` to this user (0700 at its top). Symlinks are not followed; files with
        other hard links (git objects shared with the agent's cached tree) stay the agent's,
        readable by all, so the task cannot change the cached tree through them. The top goes
        last: until then no process of this user (one a task left behind) can enter the tree
        and swap what is being changed."""
        os.chmod(tree, PRIVATE)
        for folder, dirs, files in os.walk(tree):
            for name in (*dirs, *files):
                path = os.path.join(folder, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                    os.chmod(path, stat.S_IMODE(info.st_mode) | 0o444)
                else:
                    os.chown(path, self.uid, self.gid, follow_symlinks=False)
        os.chown(tree, self.uid, self.gid)

    def environ(self, tree: Path) -> dict[str, str]:
        """``HOME``, ``USER`` and ``LOGNAME`` for this user; no home of its own: the tree."""
        return {"HOME": self.home or str(tree), "USER": self.name, "LOGNAME": self.name}


class TaskUsers:
    """The uids venv tasks run as (the ``task_user`` setting): a user name or ``UID[:GID]``
    (every task runs as it), or a range ``UID-UID`` (each running task gets a uid of its own,
    its group the same number)."""

    def __init__(self, users: list[TaskUser], setting: str) -> None:
        self.setting = setting
        self._free = list(users)
        self._lock = threading.Lock()
        self._single = users[0] if len(users) == 1 else None
        self.sample = users[0]
        self.size = len(users)
        self.umask = 0o022  # tasks' umask: the agent's own before keep_private() changed it

    @classmethod
    def parse(cls, setting: str) -> TaskUsers:
        """The users of a ``task_user`` setting; raises ConfigError naming the fix."""
        text = setting.strip()
        first, sep, last = text.partition("-")
        if sep and first.isdigit() and last.isdigit():
            low, high = int(first), int(last)
            if not 0 < low <= high or high - low > 65535:
                raise ConfigError(
                    f"task_user {setting!r} is not a range of uids above 0; e.g. 20000-20063"
                )
            return cls([_user(uid, uid) for uid in range(low, high + 1)], text)
        uid_text, _, gid_text = text.partition(":")
        try:
            if uid_text.isdigit():
                uid = int(uid_text)
                gid = _gid_of(uid) if not gid_text else int(gid_text)
            else:
                entry = pwd.getpwnam(uid_text)
                uid, gid = entry.pw_uid, int(gid_text) if gid_text else entry.pw_gid
        except (KeyError, ValueError):
            raise ConfigError(
                f"task_user {setting!r} is not a user of this host nor UID[:GID] or UID-UID; "
                "e.g. task_user: nobody, 65534:65534 or 20000-20063"
            ) from None
        if uid == 0 or gid == 0:
            raise ConfigError(f"task_user {setting!r} is root; name an unprivileged user")
        return cls([_user(uid, gid)], text)

    def check_slots(self, slots: int) -> None:
        """Raises ConfigError when a range has fewer uids than tasks may run at once."""
        if self._single is None and self.size < slots:
            raise ConfigError(
                f"task_user {self.setting} has {self.size} uid(s) for {slots} slots; give the "
                "agent a range with a uid per slot (CPU slots plus GPUs)"
            )

    def blocked(self, folder: Path) -> Path | None:
        return self.sample.blocked(folder)

    def can_run(self, program: str) -> bool:
        return self.sample.can_run(program)

    def reachable(self, program: str, folder: Path) -> str:
        """``program``, or a copy of it in ``folder`` where it is out of the users' reach."""
        if self.can_run(program):
            return program
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, PASSAGE)
        source = os.path.realpath(program)
        copy = folder / Path(program).name
        with contextlib.suppress(OSError):
            if _same_file(os.stat(source), copy.stat()):
                return str(copy)
        staged = copy.with_name(f".{copy.name}.{os.getpid()}")
        shutil.copy2(source, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, copy)  # a rename: another agent may be running the old copy
        return str(copy)

    def take(self, error: type[Exception]) -> TaskUser:
        """A uid for a task or build that starts now (the one user, else a free one); raises
        ``error`` when every uid of the range is in use."""
        if self._single is not None:
            return self._single
        with self._lock:
            if self._free:
                return self._free.pop(0)
        raise error(
            f"every uid of task_user {self.setting} is in use; give the agent a range with a "
            "uid per slot"
        )

    def give_back(self, user: TaskUser) -> None:
        """Free a ranged uid once its task has ended; what the task left running under it
        (daemons that left its process group) is killed first, or it could spy on the next
        task given that uid."""
        if self._single is None:
            _kill_processes_of(user.uid)
            with self._lock:
                if user not in self._free:
                    self._free.append(user)


def _kill_processes_of(uid: int) -> None:
    import psutil

    for process in psutil.process_iter(["uids"]):
        uids = process.info.get("uids")
        if uids is not None and uid in (uids.real, uids.effective):
            with contextlib.suppress(psutil.Error):
                process.kill()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, int(a.st_mtime)) == (b.st_size, int(b.st_mtime))


def _gid_of(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def _user(uid: int, gid: int) -> TaskUser:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return TaskUser(uid, gid, str(uid), None)
    home = entry.pw_dir if os.path.isdir(entry.pw_dir) else None
    return TaskUser(uid, gid, entry.pw_name, home)


def keep_private(users: TaskUsers) -> None:
    """From now on what the agent makes is its own (umask 077), so no folder made later under
    a 0711 root is open to task users; tasks get the umask the agent had."""
    users.umask = os.umask(0o077)


def check_agent_is_root(users: TaskUsers | None) -> None:
    """A task user needs an agent that may switch to it; raises ConfigError otherwise."""
    if users is not None and os.geteuid() != 0:
        raise ConfigError(
            f"task_user {users.setting} needs an agent run as root (it switches each venv "
            "task to that uid); run the agent as root, or drop task_user"
        )
