"""The search space: ``--param lr=loguniform:1e-5:1e-1`` and its kin, parsed without Optuna.

Kinds: ``float:LOW:HIGH``, ``loguniform:LOW:HIGH``, ``int:LOW:HIGH`` (both ends included) and
``choice:A,B,C`` (values kept as text, set in the command as given). A value a trial takes is
set in the task's command as ``--set`` does (:func:`overnight.recorder.params.set_param`): a bare
flag's ``choice:true,false`` gives it or leaves it out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from overnight.errors import UsageError
from overnight.recorder.params import Param, command_params, find_param, set_param

KINDS = ("float", "loguniform", "int", "choice")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_SPELLING = re.compile(r"^(--?)?[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_FORMS = "NAME=float:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH or choice:A,B,..."


@dataclasses.dataclass(frozen=True)
class SearchParam:
    """One param of the search: its name in the command, its kind and range (or choices)."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()

    def text(self) -> str:
        """The ``--param`` text this was parsed from (what the study's settings keep)."""
        if self.kind == "choice":
            return f"{self.name}=choice:{','.join(self.choices)}"
        low, high = (
            (str(int(self.low)), str(int(self.high)))
            if self.kind == "int"
            else (repr(self.low), repr(self.high))
        )
        return f"{self.name}={self.kind}:{low}:{high}"

    def distribution(self) -> Any:
        """The Optuna distribution (imports optuna: call only where it is installed)."""
        from optuna import distributions

        if self.kind == "choice":
            return distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return distributions.IntDistribution(int(self.low), int(self.high))
        return distributions.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")


def parse_param(text: str) -> SearchParam:
    """``lr=loguniform:1e-5:1e-1`` -> SearchParam; raises :class:`UsageError` naming the form."""
    name, sep, rest = text.partition("=")
    name = name.strip().lstrip("-")
    kind, _, spec = rest.partition(":")
    kind = kind.strip().lower()
    if not sep or not _NAME.match(name) or kind not in KINDS or not spec.strip():
        raise UsageError(f"invalid --param {text!r}: use {_FORMS}")
    if kind == "choice":
        choices = tuple(c.strip() for c in spec.split(","))
        if not all(choices) or len(set(choices)) != len(choices):
            raise UsageError(
                f"invalid --param {text!r}: choices must be distinct and not empty (choice:32,64)"
            )
        return SearchParam(name, kind, choices=choices)
    low_text, colon, high_text = spec.partition(":")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise UsageError(f"invalid --param {text!r}: LOW and HIGH must be numbers") from None
    if not colon or not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise UsageError(f"invalid --param {text!r}: give LOW:HIGH with LOW below HIGH")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise UsageError(f"invalid --param {text!r}: int bounds must be whole numbers")
    if kind == "loguniform" and low <= 0:
        raise UsageError(f"invalid --param {text!r}: loguniform needs LOW above 0")
    return SearchParam(name, kind, low, high)


def parse_space(texts: Sequence[str]) -> tuple[SearchParam, ...]:
    """Every ``--param``, each name once; raises :class:`UsageError`."""
    params = tuple(parse_param(t) for t in texts)
    names = [p.name.replace("_", "-") for p in params]
    if len(set(names)) != len(names):
        raise UsageError("--param names a param more than once; give each param once")
    return params


def value_text(value: Any) -> str:
    """How a trial's value is written in the command: ints as ints, floats in full precision."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def grid(params: Sequence[SearchParam]) -> Mapping[str, list[Any]]:
    """The grid of ``--sampler grid``: choices as given, ints every whole number of the range;
    raises :class:`UsageError` for a float param (it has no grid)."""
    out: dict[str, list[Any]] = {}
    for p in params:
        if p.kind == "choice":
            out[p.name] = list(p.choices)
        elif p.kind == "int":
            out[p.name] = list(range(int(p.low), int(p.high) + 1))
        else:
            raise UsageError(
                f"--sampler grid: {p.name} is a {p.kind} range, which has no grid; give it as "
                f"choice:V1,V2,... or use --sampler tpe"
            )
    return out


def command_spellings(
    argv: Sequence[str],
    space: Sequence[SearchParam],
    declared: Sequence[Param] = (),
    *,
    add: bool = False,
) -> dict[str, str]:
    """Each param's name -> how the command spells it (``--n-estimators``, ``lr`` for a
    ``lr=0.1`` word), checked as ``--set`` checks names (raises :class:`UsageError` for one the
    command does not take, unless ``add``)."""
    known = command_params(argv, declared)
    out = {}
    for p in space:
        samples = p.choices or (str(p.low),)  # a flag's every choice must be true or false
        for sample in samples if _flag(known, p.name) else samples[:1]:
            set_param(argv, p.name, sample, declared=declared, add=add, what="--param")
        found = find_param(known, p.name)
        out[p.name] = found.preferred if found is not None else p.name
    return out


def command_flags(
    argv: Sequence[str], space: Sequence[SearchParam], declared: Sequence[Param] = ()
) -> tuple[str, ...]:
    """The params of ``space`` that are bare flags of the command (``--amp``, given without a
    value or declared ``store_true``): a trial sets them present or absent, as ``--set`` does."""
    known = command_params(argv, declared)
    return tuple(p.name for p in space if _flag(known, p.name))


def _flag(known: Sequence[Param], name: str) -> bool:
    found = find_param(known, name)
    return found is not None and found.flag


def set_values(
    argv: Sequence[str],
    values: Mapping[str, Any],
    spellings: Mapping[str, str],
    flags: Sequence[str] = (),
) -> tuple[str, ...]:
    """``argv`` with each param's value set, spelled as ``spellings`` say (new ones added);
    the params in ``flags`` are bare flags, there for ``true`` and left out for ``false``."""
    declared = [
        Param((s,), flag=name in flags) for name, s in spellings.items() if s.startswith("-")
    ]
    out = tuple(argv)
    for name, value in values.items():
        out = set_param(out, name, value_text(value), declared=declared, add=True, what="--param")
    return out


def check_spelling(spelling: str) -> str:
    """A spelling read back from Redis: an option or a name, nothing else."""
    if not _SPELLING.match(spelling):
        raise ValueError(f"param spelling {spelling!r} is not an option name")
    return spelling
