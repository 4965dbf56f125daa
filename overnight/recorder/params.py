"""Params: the ``--name value`` and ``--name=value`` options of a recorded command.

They are read from argv for display and sweeps (:func:`parse_params`) and changed in argv for
``overnight clone --set`` and ``enqueue --sweep`` (:func:`set_param`), so argv stays the truth.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBER = re.compile(r"^-\.?\d")
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
# Interpreter options that take a value as the next token.
_PYTHON_VALUE_OPTS = frozenset({"-W", "-X", "--check-hash-based-pycs"})
FLAG_VALUE = "true"
"""The value recorded for an option given without one (``--amp``)."""


def _is_option(token: str) -> bool:
    return token.startswith("-") and token not in ("-", "--") and not _NUMBER.match(token)


def _first_program_arg(argv: Sequence[str]) -> int:
    """Index of the first argument that belongs to the user's program, not the interpreter."""
    if not argv:
        return 0
    prog = argv[0].rsplit("/", 1)[-1]
    if not _PYTHON.match(prog):
        return 1
    i = 1
    while i < len(argv):
        token = argv[i]
        if token in ("-m", "-c"):
            return i + 2
        if token in _PYTHON_VALUE_OPTS:
            i += 2
        elif token.startswith("-"):
            i += 1
        else:
            return i + 1  # the script
    return i


def _option_name(token: str) -> str:
    return token.lstrip("-").split("=", 1)[0]


def parse_params(argv: Sequence[str]) -> dict[str, str]:
    """``--lr 0.1``, ``--lr=0.1`` and ``-n 5`` become ``{"lr": "0.1", "n": "5"}``.

    A bare option (``--amp``) gets :data:`FLAG_VALUE`; positional arguments are not params;
    parsing stops at ``--``. A later occurrence of a name wins, as with argparse.
    """
    params: dict[str, str] = {}
    i = _first_program_arg(argv)
    while i < len(argv):
        token = argv[i]
        if token == "--":
            break
        if _is_option(token):
            name = _option_name(token)
            if not name:
                i += 1
                continue
            if "=" in token:
                params[name] = token.split("=", 1)[1]
            elif i + 1 < len(argv) and not _is_option(argv[i + 1]) and argv[i + 1] != "--":
                params[name] = argv[i + 1]
                i += 1
            else:
                params[name] = FLAG_VALUE
        i += 1
    return params


def set_param(argv: Sequence[str], name: str, value: str) -> tuple[str, ...]:
    """A copy of argv with param ``name`` set to ``value``.

    The value after ``--name`` (or ``-name`` for one letter) or after ``--name=`` is replaced;
    a bare ``--name`` gets the value inserted after it; a name not present is appended.
    """
    out = list(argv)
    start = _first_program_arg(out)
    end = out.index("--", start) if "--" in out[start:] else len(out)
    last = -1
    for i in range(start, end):
        if _is_option(out[i]) and _option_name(out[i]) == name:
            last = i
    if last >= 0:
        token = out[last]
        if "=" in token:
            out[last] = token.split("=", 1)[0] + "=" + value
        elif last + 1 < end and not _is_option(out[last + 1]):
            out[last + 1] = value
        else:
            out.insert(last + 1, value)
        return tuple(out)
    flag = f"-{name}" if len(name) == 1 else f"--{name}"
    out[end:end] = [flag, value]
    return tuple(out)
