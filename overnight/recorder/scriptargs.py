"""The options a command's Python script declares with argparse, read without running it.

``enqueue --sweep`` checks its names against them (:func:`overnight.recorder.params.set_param`),
so a sweep over ``--seed``, which the script takes but the command does not give, needs no
``--add-param``. The script is parsed with :mod:`ast`, never imported: every
``<anything>.add_argument("-s", "--long", ...)`` call with literal option strings counts, in
whichever parser or group of the file. Options declared in another module are not seen; a
script that cannot be found or parsed declares nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from overnight.recorder.params import Param, program_start

MAX_SCRIPT_BYTES = 2 * 1024 * 1024
"""Larger files are not read (no training script is this big; a data file named .py might be)."""

_FLAG_ACTIONS = frozenset({"store_true", "store_false", "store_const", "count", "help", "version"})


def script_of(argv: Sequence[str], cwd: Path) -> Path | None:
    """The Python file ``argv`` runs, resolved from ``cwd``: ``python [opts] FILE.py``,
    ``python -m pkg.mod`` (``pkg/mod.py`` or ``pkg/mod/__main__.py``), or for a launcher
    (``torchrun``, ``accelerate launch``) its first ``.py`` word; None when there is none."""
    start = program_start(argv)
    if start > 1 and argv[start - 2] == "-c":
        return None
    if start > 1 and argv[start - 2] == "-m":
        parts = argv[start - 1].split(".")
        base = cwd.joinpath(*parts)
        candidates = [base.with_name(parts[-1] + ".py"), base / "__main__.py"]
    elif start > 1:
        candidates = [cwd / argv[start - 1]]
    else:
        candidates = [cwd / word for word in argv[1:] if word.endswith(".py")][:1]
    return next((path for path in candidates if path.is_file()), None)


def declared_params(argv: Sequence[str], cwd: Path) -> tuple[Param, ...]:
    """The options the script of ``argv`` declares (:func:`script_of`); () when none are seen."""
    script = script_of(argv, cwd)
    if script is None:
        return ()
    try:
        if script.stat().st_size > MAX_SCRIPT_BYTES:
            return ()
        tree = ast.parse(script.read_bytes(), filename=str(script))
    except (OSError, SyntaxError, ValueError, RecursionError):
        return ()
    return tuple(param for node in ast.walk(tree) for param in _declared(node))


def _declared(node: ast.AST) -> list[Param]:
    """The options an ``add_argument`` call declares (none for any other node)."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
    ):
        return []
    spellings = tuple(
        a.value
        for a in node.args
        if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")
    )
    if not spellings:
        return []  # a positional argument
    action = next((k.value for k in node.keywords if k.arg == "action"), None)
    if isinstance(action, ast.Constant):
        return [Param(spellings, flag=action.value in _FLAG_ACTIONS)]
    if _names_boolean_optional(action):  # --x and --no-x: two flags, each set on its own
        negated = tuple(f"--no-{s[2:]}" for s in spellings if s.startswith("--"))
        return [Param(spellings, flag=True), *([Param(negated, flag=True)] if negated else [])]
    return [Param(spellings)]


def _names_boolean_optional(node: ast.expr | None) -> bool:
    """``argparse.BooleanOptionalAction`` (or the bare name): ``--x`` and ``--no-x``, no value."""
    if isinstance(node, ast.Attribute):
        return node.attr == "BooleanOptionalAction"
    return isinstance(node, ast.Name) and node.id == "BooleanOptionalAction"
