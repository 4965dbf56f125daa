"""Cache keys for environments: a hash of everything that defines one.

Both venv and docker environments key their caches with :func:`environment_key` over the
normalized requirements (:func:`normalize_requirements`) and the other defining parts.
"""

from __future__ import annotations

import hashlib


def normalize_requirements(text: str) -> str:
    """Requirements text with comments, blank lines and surrounding space removed, lines sorted.

    Two lists that differ only in order, comments or spacing give the same environment.
    """
    lines = set()
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.add(" ".join(line.split()))
    return "\n".join(sorted(lines)) + ("\n" if lines else "")


def environment_key(*parts: str) -> str:
    """A short stable hash of the parts (order matters), used in cache paths and image tags."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:24]
