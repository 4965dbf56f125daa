"""Output blobs in a file system fsspec reaches: a shared folder, an SFTP server, an S3 bucket.

A blob lies at ``<url>/blobs/<aa>/<digest>`` (``aa``: the digest's first two characters, so no
folder holds more than a small share of them). It is written under a temporary name in that
folder and renamed only once its bytes are complete and hash to ``digest``: a reader, or an agent
asking :meth:`~FsspecOutputStore.exists`, never sees half a blob, and a file that changed while
it was read leaves nothing behind. Reads check the digest too: a store on a share others can
write is no more trusted than Redis.

fsspec (and paramiko for sftp, s3fs for s3) are imported when a store is opened, never by
commands that have none; the connection is made on first use and again after a failure, so an
agent outlives a store that was down.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from overnight.errors import OutputChanged, OutputError, OutputStoreDown
from overnight.outputs.locations import check_output_store, public_store_url
from overnight.outputs.store import CHUNK, OutputStore

_DIGEST = re.compile(r"[0-9a-f]{64}")
_UNREACHABLE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EPIPE,
        errno.ENOTCONN,
    }
)
_EXTRA = {"s3": "s3"}  # scheme -> the extra that installs its file system (default: stores)


class FsspecOutputStore(OutputStore):
    """Content-addressed blobs under an fsspec URL (``file://``, ``sftp://``, ``s3://``)."""

    def __init__(self, url: str, home: Path | None = None) -> None:
        try:
            check_output_store(url)
        except Exception as exc:  # ConfigError: the URL came from settings checked elsewhere
            raise OutputError(str(exc)) from exc
        self.url = public_store_url(url)
        self._raw_url = url
        parts = urlsplit(url)
        self._scheme = parts.scheme.lower()
        self._password = parts.password
        bucket = f"{parts.hostname}/" if self._scheme == "s3" else ""
        self._root = f"{bucket}{unquote(parts.path)}".rstrip("/")
        self._home = home if home is not None else Path.home()  # ~/.ssh for sftp
        self._fs: Any = None
        self._lock = threading.RLock()
        self._root_seen = False  # its folder was found once: it is not checked again
        try:
            import fsspec  # noqa: F401 -- the store's one dependency, checked while opening
        except ImportError as exc:
            raise self._missing(exc) from exc

    def exists(self, digest: str) -> bool:
        path = self._path(digest)
        fs = self._filesystem()
        try:
            with self._failing(f"look for blob {digest}"):
                fs.info(path)
        except OutputError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return False
            raise
        return True

    def write(self, digest: str, chunks: Iterable[bytes]) -> None:
        final = self._path(digest)
        folder = final.rpartition("/")[0]
        temp = f"{folder}/.{digest}.{uuid.uuid4().hex}.part"
        action = f"store blob {digest}"
        with self._lock:  # paramiko: another call would swallow a pipelined write's answers
            fs = self._filesystem()
            self._check_root(fs)
            try:
                with self._failing(action):
                    fs.makedirs(folder, exist_ok=True)
                self._write_verified(fs, temp, digest, chunks, action)
                with self._failing(action):
                    fs.mv(temp, final)
            except BaseException:
                with contextlib.suppress(Exception):  # a store that broke may keep a .part file
                    fs.rm(temp)
                raise

    def read(self, digest: str) -> Iterator[bytes]:
        path = self._path(digest)
        fs = self._filesystem()
        try:
            with self._failing(f"read blob {digest}"):
                handle = fs.open(path, "rb")
        except OutputError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise OutputError(
                    f"output store {self.url} has no blob {digest}: it was deleted (gc) or never "
                    "stored; the task's record notes the outputs that were not stored"
                ) from exc
            raise
        return self._chunks(handle, digest)

    def delete(self, digest: str) -> None:
        path = self._path(digest)
        fs = self._filesystem()
        try:
            with self._failing(f"delete blob {digest}"):
                fs.rm(path)
        except OutputError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise

    def _write_verified(
        self, fs: Any, temp: str, digest: str, chunks: Iterable[bytes], action: str
    ) -> None:
        """Write ``chunks`` to ``temp``; errors of ``chunks`` itself (the file being read) pass
        through unchanged, the store's become :class:`OutputError`."""
        hasher = hashlib.sha256()
        with self._failing(action):
            out = fs.open(temp, "wb")
            if hasattr(out, "set_pipelined"):  # paramiko: send writes without waiting on each
                out.set_pipelined(True)
        try:
            for chunk in chunks:
                hasher.update(chunk)
                with self._failing(action):
                    out.write(chunk)
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()
            raise
        with self._failing(action):
            out.close()  # where a pipelined or buffered write reports a full disk
        if hasher.hexdigest() != digest:
            raise OutputChanged(
                f"cannot store blob {digest} in {self.url}: its bytes hash to "
                f"{hasher.hexdigest()} (the file changed while it was read); nothing was kept, "
                "the next sync stores it again"
            )

    def _chunks(self, handle: Any, digest: str) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        try:
            while True:
                with self._failing(f"read blob {digest}"):
                    chunk = handle.read(CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
                yield chunk
        finally:
            with self._lock, contextlib.suppress(Exception):
                handle.close()
        if hasher.hexdigest() != digest:
            raise OutputError(
                f"blob {digest} in {self.url} is damaged: its bytes hash to {hasher.hexdigest()}; "
                "delete it there, and the task's next sync stores it again"
            )

    def _path(self, digest: str) -> str:
        if not _DIGEST.fullmatch(digest):
            # digests come from manifests in Redis, which anyone with queue access can write
            raise OutputError(f"{digest!r} is not a sha256 hex digest; the manifest is damaged")
        return f"{self._root}/blobs/{digest[:2]}/{digest}"

    def _check_root(self, fs: Any) -> None:
        """Refuse to write when the store's folder is missing, rather than make it: a share
        that is not mounted would otherwise fill the agent's own disk, out of everyone's sight.
        """
        if self._scheme == "s3" or self._root_seen:
            return  # a bucket's prefix is no folder
        try:
            with self._failing("look for its folder"):
                found = fs.isdir(self._root or "/")
        except OutputError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            found = False
        if not found:
            raise OutputStoreDown(
                f"output store {self.url}: its folder {self._root} does not exist (a share "
                "that is not mounted?); create it once (mkdir -p) or mount the share there"
            )
        self._root_seen = True

    def _filesystem(self) -> Any:
        with self._lock:  # tasks' syncs may share the store from their threads
            if self._fs is not None and not getattr(self._fs, "connected", lambda: True)():
                self._drop()  # the server closed it while the store sat idle between syncs
            if self._fs is None:
                with self._failing("connect"):
                    self._fs = self._connect()
            return self._fs

    def _connect(self) -> Any:
        if self._scheme == "sftp":
            from overnight.outputs.sftp import sftp_filesystem, sftp_target

            return sftp_filesystem(sftp_target(self._raw_url, self._home))
        import fsspec

        return fsspec.filesystem(self._scheme, skip_instance_cache=True)

    def _drop(self) -> None:
        with self._lock:
            fs, self._fs = self._fs, None
        with contextlib.suppress(Exception):
            getattr(fs, "disconnect", lambda: None)()

    @contextlib.contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        """Turn the file system's errors into one-line :class:`OutputError`\\ s naming the store.

        Holds the store's lock: one connection serves one call at a time (paramiko's reads of
        one SFTP channel from two threads mix their answers up).
        """
        try:
            with self._lock:
                yield
        except OutputError:
            raise
        except ImportError as exc:
            raise self._missing(exc) from exc
        except Exception as exc:
            code = exc.errno if isinstance(exc, OSError) else None
            if code is None:
                # not the store's answer (no space, no access) but perhaps a broken or stuck
                # connection: the next call makes a new one
                self._drop()
            down = action == "connect" or code is None or code in _UNREACHABLE
            raise (OutputStoreDown if down else OutputError)(
                f"output store {self.url}: cannot {action}: {self._cause(exc)}; check that it is "
                "reachable, writable and has space, or set output_store to another store"
            ) from exc

    def _cause(self, exc: Exception) -> str:
        text = " ".join(str(exc).split()) or "no detail given"
        if self._password:
            text = text.replace(self._password, "***")
        return f"{type(exc).__name__}: {text}"

    def _missing(self, exc: ImportError) -> OutputError:
        extra = _EXTRA.get(self._scheme, "stores")
        return OutputError(
            f"output store {self.url} needs a package that is not installed ({exc.name or exc}); "
            f"install it on this machine: pip install 'overnight[{extra}]'"
        )


def open_fsspec_store(url: str) -> OutputStore:
    """The store at ``url`` (``file://``, ``sftp://``, ``s3://``); connects on first use."""
    return FsspecOutputStore(url)
