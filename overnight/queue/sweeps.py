"""Sweeps: ``--sweep lr=0.1,0.01 --sweep bs=32,64`` becomes the cross product of argv variants.

Each name must be a param the command takes (:func:`overnight.recorder.params.set_param`), so a
misspelled one fails at enqueue rather than on every task of the sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Sequence

from overnight.errors import UsageError
from overnight.recorder.params import Param, command_params, find_param, parse_params, set_param

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One swept param and its values, in the order given."""

    name: str
    values: tuple[str, ...]


def parse_sweep(text: str) -> Sweep:
    """``lr=0.1,0.01`` -> Sweep("lr", ("0.1", "0.01")); raises :class:`UsageError`."""
    name, sep, rest = text.partition("=")
    name = name.strip().lstrip("-")
    values = tuple(v.strip() for v in rest.split(","))
    if not sep or not _NAME.match(name) or not rest.strip() or not all(values):
        raise UsageError(
            f"invalid --sweep {text!r}: use NAME=V1,V2,... (for example --sweep lr=0.1,0.01)"
        )
    if len(set(values)) != len(values):
        raise UsageError(f"invalid --sweep {text!r}: a value is repeated")
    return Sweep(name, values)


def expand(
    argv: Sequence[str],
    sweeps: Sequence[Sweep],
    *,
    declared: Iterable[Param] = (),
    add: bool = False,
) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """Every combination of the sweeps' values set in ``argv``, with the params each one has.

    ``declared`` are the options the command's script declares and ``add`` allows names the
    command does not take (``--add-param``), as for :func:`set_param`.
    """
    declared = tuple(declared)
    params = command_params(argv, declared)
    names = [_param_name(params, s.name) for s in sweeps]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(
            f"--sweep names {', '.join(repeated)} more than once; give each param once"
        )
    if not sweeps:
        return [(tuple(argv), parse_params(argv))]
    out = []
    for combo in itertools.product(*(s.values for s in sweeps)):
        variant = tuple(argv)
        for sweep, value in zip(sweeps, combo, strict=True):
            variant = set_param(
                variant, sweep.name, value, declared=declared, add=add, what="--sweep"
            )
        out.append((variant, parse_params(variant)))
    return out


def _param_name(params: Sequence[Param], name: str) -> str:
    """How a sweep's name is told apart from the others: the param it means (``n_estimators``
    and ``n-estimators`` are one), else the name itself."""
    param = find_param(params, name)
    return (param.preferred if param is not None else name).lstrip("-")
