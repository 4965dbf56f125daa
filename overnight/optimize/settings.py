"""A study's settings as Redis keeps them: what ``--resume`` and detached drivers go on with.

Everything read back is checked (an agent drives a detached study from this JSON): names match
:data:`STUDY_NAME`, numbers are in range, params parse, the task options are typed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import redis

from overnight.errors import OptimizeError, StudyNotFound, UsageError
from overnight.optimize.space import SearchParam, check_spelling, parse_space
from overnight.queue import keys, replies
from overnight.queue.records import TaskOptions

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")
REDUCERS = ("last", "min", "max")
DIRECTIONS = ("minimize", "maximize")


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """How a study runs: its metric (``reduce`` says which of its values is the trial's), its
    size and parallelism, its search space, sampler and pruner, and how each trial's task runs.

    ``spellings`` are the params' names as the command spells them (``--n-estimators`` for
    ``n_estimators`` where its script declares that); ``flags`` name those that are bare flags
    of the command (``--amp``: present for ``true``, absent for ``false``); ``journal`` says the study is in overnight's Redis journal (else the driver
    needs its ``--storage`` URL, which Redis never holds); ``created`` (epoch seconds) keeps a new
    study from gc before its first trial is enqueued.
    """

    name: str
    sweep: str
    metric: str
    params: tuple[str, ...]
    options: TaskOptions
    reduce: str = "last"
    direction: str = "minimize"
    trials: int = 20
    parallel: int = 4
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    spellings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    flags: tuple[str, ...] = ()
    journal: bool = True
    detached: bool = False
    created: float = 0.0

    def __post_init__(self) -> None:
        if not STUDY_NAME.match(self.name):
            raise UsageError(
                f"invalid study name {self.name!r}: use letters, digits, '.', '_' and '-'"
            )
        keys_ok = len(self.sweep) == keys.ID_LENGTH and keys.looks_like_id(self.sweep)
        if not keys_ok:
            raise ValueError(f"sweep id {self.sweep!r} is not {keys.ID_LENGTH} hex digits")
        for value, allowed, what in (
            (self.reduce, REDUCERS, "metric reduce"),
            (self.direction, DIRECTIONS, "--direction"),
            (self.sampler, SAMPLERS, "--sampler"),
            (self.pruner, PRUNERS, "--pruner"),
        ):
            if value not in allowed:
                raise UsageError(f"{what} {value!r} is not one of {', '.join(allowed)}")
        if self.trials < 1 or self.parallel < 1:
            raise UsageError("--trials and --parallel must be 1 or more")
        if set(self.flags) - {p.name for p in self.space}:
            raise ValueError(f"flags {self.flags} are not all params of the study")

    @property
    def space(self) -> tuple[SearchParam, ...]:
        return parse_space(self.params)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["options"] = dataclasses.asdict(self.options)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> StudySettings:
        """Parse and check stored settings; raises :class:`OptimizeError` when malformed."""
        try:
            data = json.loads(text)
            return cls._from_dict(data)
        except (ValueError, TypeError, KeyError, UsageError) as exc:
            raise OptimizeError(
                f"the study's settings in Redis cannot be read ({exc}); start it again under "
                "a new name"
            ) from exc

    @classmethod
    def _from_dict(cls, data: Any) -> StudySettings:
        if not isinstance(data, dict):
            raise TypeError("settings are not a JSON object")
        opts = data["options"]
        if not isinstance(opts, dict):
            raise TypeError("options are not a JSON object")
        options = TaskOptions(
            queue=_typed(opts["queue"], str),
            gpus=_typed(opts["gpus"], int),
            image=_optional(opts.get("image"), str),
            timeout=_optional(opts.get("timeout"), float),
            retries=_typed(opts["retries"], int),
            grace=_optional(opts.get("grace"), float),
            expect=_optional(opts.get("expect"), float),
        )
        spellings = data.get("spellings", {})
        if not isinstance(spellings, dict):
            raise TypeError("spellings are not a JSON object")
        return cls(
            name=_typed(data["name"], str),
            sweep=_typed(data["sweep"], str),
            metric=_typed(data["metric"], str),
            params=tuple(_typed(p, str) for p in data["params"]),
            options=options,
            reduce=_typed(data["reduce"], str),
            direction=_typed(data["direction"], str),
            trials=_typed(data["trials"], int),
            parallel=_typed(data["parallel"], int),
            sampler=_typed(data["sampler"], str),
            pruner=_typed(data["pruner"], str),
            seed=_optional(data.get("seed"), int),
            spellings={
                _typed(k, str): check_spelling(_typed(v, str)) for k, v in spellings.items()
            },
            flags=tuple(_typed(f, str) for f in _typed(data.get("flags", []), list)),
            journal=_typed(data.get("journal", True), bool),
            detached=_typed(data.get("detached", False), bool),
            created=_typed(data.get("created", 0.0), float),
        )


def _typed(value: Any, kind: type[Any]) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(value: Any, kind: type[Any]) -> Any:
    return None if value is None else _typed(value, kind)


def save(client: redis.Redis, settings: StudySettings) -> None:
    """Store the settings and the study's name as a name of its sweep (``--sweep STUDY``)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.study(settings.name), settings.to_json())
        pipe.set(keys.sweep_name(settings.name), settings.sweep)
        if settings.detached:
            pipe.sadd(keys.DETACHED_STUDIES, settings.name)
        else:
            pipe.srem(keys.DETACHED_STUDIES, settings.name)
        pipe.execute()


def load(client: redis.Redis, name: str) -> StudySettings:
    """The study's stored settings; raises :class:`StudyNotFound`."""
    raw = replies.raw(client.get(keys.study(name))) if STUDY_NAME.match(name) else None
    if raw is None:
        raise StudyNotFound(
            f"no study named {name!r} was started here; `overnight optimize --study NAME ...` "
            "starts one"
        )
    return StudySettings.from_json(raw)


def exists(client: redis.Redis, name: str) -> bool:
    return bool(client.exists(keys.study(name)))
