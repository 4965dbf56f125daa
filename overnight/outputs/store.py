"""Where output files are kept: content-addressed blobs behind one small interface.

A file is stored under the sha256 of its bytes, so a checkpoint rewritten unchanged costs nothing
and identical files across a sweep are kept once. Which task has which file (path, digest,
size, attempt) is not the store's business: the task's manifest in Redis says so
(:mod:`overnight.outputs.manifest`). Implementations: Redis itself, the default
(:mod:`overnight.outputs.redisstore`), and any fsspec URL (``file://``, ``sftp://``, ``s3://``;
:mod:`overnight.outputs.fsstore`). :func:`open_store` picks one by URL.

Bytes always travel as an iterator of chunks (:data:`CHUNK` bytes at most): no implementation
holds a whole file in memory.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

CHUNK = 1024 * 1024
"""Bytes per chunk read or written."""


class OutputStore(abc.ABC):
    """Content-addressed blobs, by sha256 hex digest."""

    url: str
    """Where the store is, without credentials (recorded with each task's outputs)."""

    @abc.abstractmethod
    def exists(self, digest: str) -> bool:
        """Whether a complete blob with this digest is stored."""

    @abc.abstractmethod
    def write(self, digest: str, chunks: Iterable[bytes]) -> None:
        """Store the bytes ``chunks`` yields under ``digest``, visible only once complete.

        Raises :class:`overnight.errors.OutputChanged` when the bytes do not hash to ``digest``
        (the file changed while it was read), leaving nothing stored;
        :class:`overnight.errors.OutputStoreDown` when the store cannot be reached, and
        :class:`overnight.errors.OutputError` when it refuses the blob (full, read-only).
        """

    @abc.abstractmethod
    def read(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes, in chunks; :class:`overnight.errors.OutputError` if it is missing."""

    @abc.abstractmethod
    def delete(self, digest: str) -> None:
        """Remove the blob; a missing one is no error."""
