"""Text from a task (its output, name, notes, error) made safe to print on a terminal.

A task's output and everything recorded with it come from whoever could enqueue; printed as is,
ESC and other control characters would let it set the terminal's title, write to the clipboard
(OSC 52), plant links (OSC 8), clear the screen or move the cursor over overnight's own lines.
:func:`visible` writes every such character as a visible escape (``\\x1b``), on a terminal or
in a pipe alike; JSON output needs nothing more (``json.dumps`` escapes them already).
"""

from __future__ import annotations

import logging
import re
from typing import Any

_CONTROL = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\xad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u2066-\u2069\ufeff]"
)
"""C0 (tab aside), DEL, C1 (8-bit CSI ``\\x9b`` too), and the invisible, bidirectional and
line-separator characters that make text look other than it is."""

_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with control characters (newlines too: one value stays one line) escaped."""
    return _CONTROL.sub(_escape, text)


def visible_lines(text: str) -> str:
    """Several lines of output: each one :func:`visible`, the newlines between them kept."""
    return "\n".join(visible(line) for line in text.split("\n"))


class VisibleFormatter(logging.Formatter):
    """A log formatter for the agent's stderr: a message (which may quote a task's output or
    error) stays one line with its control characters visible; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return visible_lines(super().formatException(ei))
