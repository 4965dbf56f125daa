"""Params: the ``--name value``, ``--name=value`` and ``name=value`` arguments of a recorded command.

They are read from argv for display and sweeps (:func:`parse_params`) and changed in argv for
``overnight clone --set`` and ``enqueue --sweep`` (:func:`set_param`), so argv stays the truth.
``name=value`` words after the script are Hydra-style overrides, params like options.

A name given to :func:`set_param` must be one the command takes (:class:`Param`): an option or
``name=value`` word of its argv, or one its script declares (:mod:`overnight.recorder.scriptargs`),
``-`` and ``_`` alike; anything else is refused with the closest match unless ``add`` says it is
new on purpose. So ``--sweep n_estimators=10,50`` sets ``--n-estimators`` where the command has
it, instead of appending a flag the script would reject on every task.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence

from overnight.errors import UsageError

_NUMBER = re.compile(r"^-\.?\d")
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
_KEYWORD = re.compile(r"^(\+{0,2})([A-Za-z_][A-Za-z0-9_.\-]*)=(.*)$", re.DOTALL)
# Interpreter options that take a value as the next token.
_PYTHON_VALUE_OPTS = frozenset({"-W", "-X", "--check-hash-based-pycs"})
FLAG_VALUE = "true"
"""The value recorded for an option given without one (``--amp``)."""
_FLAG_VALUES = {"true": True, "false": False}


@dataclasses.dataclass(frozen=True)
class Param:
    """One param a command takes: its spellings (``("-n", "--n-estimators")``, or ``("epochs",)``
    for a ``name=value`` one) and whether it is a bare flag (``--amp``, no value)."""

    spellings: tuple[str, ...]
    flag: bool = False

    @property
    def keyword(self) -> bool:
        """Given as ``name=value`` rather than as an option."""
        return not self.spellings[0].startswith("-")

    @property
    def preferred(self) -> str:
        """The spelling a param that is not in argv yet is added with: the longest."""
        return max(self.spellings, key=len)


@dataclasses.dataclass(frozen=True)
class _Use:
    """Where argv gives a param: the word at ``index``, and the value's word (None: bare)."""

    index: int
    spelling: str
    value_index: int | None
    inline: bool  # the value is in the same word, after '='


def _is_option(token: str) -> bool:
    return token.startswith("-") and token not in ("-", "--") and not _NUMBER.match(token)


def program_start(argv: Sequence[str]) -> int:
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


def _key(spelling: str) -> str:
    """What names are compared by: no leading dashes or pluses, ``_`` as ``-``."""
    return spelling.lstrip("-+").replace("_", "-")


def _uses(argv: Sequence[str], declared: Sequence[Param] = ()) -> tuple[list[_Use], int]:
    """Every param word of argv's program part, and where that part ends (``--`` or the end).

    The word after an option is its value unless it is an option itself, or a ``name=value``
    word (a param of its own), or the script ``declared`` the option as one taking a value or
    not (then that decides).
    """
    valued = {_key(s): not p.flag for p in declared for s in p.spellings}
    start = program_start(argv)
    end = argv.index("--", start) if "--" in argv[start:] else len(argv)
    uses: list[_Use] = []
    i = start
    while i < end:
        token = argv[i]
        spelling = token.split("=", 1)[0]
        keyword = _KEYWORD.match(token)
        if _is_option(token) and spelling.strip("-"):
            following = argv[i + 1] if i + 1 < end else None
            if "=" in token:
                uses.append(_Use(i, spelling, i, inline=True))
            elif (
                following is not None
                and not _is_option(following)
                and valued.get(_key(spelling), not _KEYWORD.match(following))
            ):
                uses.append(_Use(i, spelling, i + 1, inline=False))
                i += 1
            else:
                uses.append(_Use(i, spelling, None, inline=False))
        elif keyword:
            uses.append(_Use(i, keyword.group(2), i, inline=True))
        i += 1
    return uses, end


def _value(argv: Sequence[str], use: _Use) -> str:
    if use.value_index is None:
        return FLAG_VALUE
    word = argv[use.value_index]
    return word.split("=", 1)[1] if use.inline else word


def parse_params(argv: Sequence[str]) -> dict[str, str]:
    """``--lr 0.1``, ``--lr=0.1``, ``-n 5`` and ``epochs=3`` become
    ``{"lr": "0.1", "n": "5", "epochs": "3"}``.

    A bare option (``--amp``) gets :data:`FLAG_VALUE`; other positional arguments are not
    params; parsing stops at ``--``. A later occurrence of a name wins, as with argparse.
    """
    uses, _ = _uses(argv)
    return {use.spelling.lstrip("-"): _value(argv, use) for use in uses}


def command_params(argv: Sequence[str], declared: Iterable[Param] = ()) -> list[Param]:
    """The params a command takes: those its script ``declared``, then those only its argv has
    (a flag there when given without a value)."""
    params = list(declared)
    known = {_key(s) for p in params for s in p.spellings}
    uses, _ = _uses(argv, params)
    seen: dict[str, Param] = {}
    for use in uses:
        key = _key(use.spelling)
        if key in known:
            continue
        bare = use.value_index is None
        if key not in seen or (bare and not seen[key].flag):
            seen[key] = Param((use.spelling,), flag=bare)
    return params + list(seen.values())


def find_param(params: Sequence[Param], name: str) -> Param | None:
    """The param ``name`` means (``n_estimators`` finds ``--n-estimators``), or None."""
    key = _key(name)
    return next((p for p in params if any(_key(s) == key for s in p.spellings)), None)


def set_param(
    argv: Sequence[str],
    name: str,
    value: str,
    *,
    declared: Iterable[Param] = (),
    add: bool = False,
    what: str = "--set",
) -> tuple[str, ...]:
    """A copy of argv with param ``name`` set to ``value``, in place where argv gives it.

    A param argv lacks is appended (``--name value``, or ``name=value`` for a keyword one); a bare
    flag takes ``true`` (present) or ``false`` (removed). Raises :class:`UsageError` for a name
    the command does not take (unless ``add``) and for any other value of a flag; ``what``
    (``--set``, ``--sweep``) names the flag that asked, in those messages.
    """
    params = command_params(argv, declared)
    param = find_param(params, name)
    if param is None:
        if not add:
            raise UsageError(_unknown(name, params, what))
        new = f"-{name}" if len(name) == 1 else f"--{name}"
        keyword = any(p.keyword for p in params) and not any(not p.keyword for p in params)
        param = Param((name,) if keyword else (new,))
    uses, end = _uses(argv, tuple(declared))
    keys = {_key(s) for s in param.spellings}
    mine = [u for u in uses if _key(u.spelling) in keys]
    out = list(argv)
    if param.flag:
        wanted = _FLAG_VALUES.get(value.lower())
        if wanted is None:
            raise UsageError(
                f"{what} {name}={value}: {param.preferred} is a bare flag (it takes no value); "
                f"{name}=true gives it, {name}=false leaves it out"
            )
        if not wanted:
            return tuple(w for i, w in enumerate(out) if i not in {u.index for u in mine})
        return tuple(out) if mine else (*out[:end], param.preferred, *out[end:])
    if not mine:
        added = [f"{param.preferred}={value}"] if param.keyword else [param.preferred, value]
        return (*out[:end], *added, *out[end:])
    last = mine[-1]
    if last.inline:
        out[last.index] = out[last.index].split("=", 1)[0] + "=" + value
    elif last.value_index is not None:
        out[last.value_index] = value
    else:
        out.insert(last.index + 1, value)
    return tuple(out)


def _unknown(name: str, params: Sequence[Param], what: str) -> str:
    shown = {_key(s): s for p in params for s in p.spellings}
    close = difflib.get_close_matches(_key(name), list(shown), n=1, cutoff=0.5)
    if close:
        hint = f"closest: {shown[close[0]]}"
    elif shown:
        hint = "it has " + ", ".join(list(shown.values())[:8])
    else:
        hint = "it has none"
    return (
        f"{what} {name}: the command has no option {name} ({hint}); fix the name, or pass "
        "--add-param to add it as a new one"
    )
