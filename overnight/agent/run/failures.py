"""Why a task failed, in the words of its own output: the line a user would look for first.

A Python task that dies prints its traceback last, and the traceback's last line names the error
(``torch.cuda.OutOfMemoryError: CUDA out of memory...``); ``sys.exit("diverged")`` prints just
its message. Tools often print more after that (wandb's sync summary, a logger's shutdown), so
the last line that looks like an exception wins over the lines after it: the record's error is
``exited with 1: ValueError: bad shape``. Without one, the last line of output is quoted as what
it is: ``exited with 1 (last output: diverged at step 900)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

TAIL_LINES = 60  # lines of the end of a task's output kept for this
MAX_CHARS = 240  # an error line longer than this is cut, with an ellipsis

_EXCEPTION = re.compile(
    r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Failure|Fault)\b(?::|$)"
)
_FATAL = re.compile(r"^(?:Segmentation fault|Bus error|fatal error:|FATAL\b)")
_OURS = "[overnight]"


def error_line(lines: Sequence[str]) -> tuple[str, bool] | None:
    """The line of ``lines`` (the end of a task's output) that says why it failed, and whether
    it looks like an error (else it is only the last line); None without output."""
    candidates = [
        text for text in (line.strip() for line in lines) if text and not text.startswith(_OURS)
    ]
    if not candidates:
        return None
    found = next((t for t in reversed(candidates) if _EXCEPTION.match(t) or _FATAL.match(t)), None)
    text = found or candidates[-1]
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 1] + "…"
    return text, found is not None


def describe_failure(how: str, lines: Sequence[str]) -> str:
    """``how`` ("exited with 1") with the line of output that says why, as the record's error."""
    said = error_line(lines)
    if said is None:
        return how
    text, is_error = said
    return f"{how}: {text}" if is_error else f"{how} (last output: {text})"
