"""Scalar metrics read from one line of a run's output, with no SDK in the task.

A line is taken only when all of it is metrics, in one of three forms (README's "Metrics"):

- ``name: number`` or ``name=number`` pairs, separated by spaces, commas, ``;`` or ``|``
  (``loss: 0.25``, ``epoch=3 loss=0.25 acc=0.91``, ``loss: 0.25, acc: 0.91``), the convention
  Guild reads;
- a JSON object on one line whose numeric fields are the metrics (``{"step": 3, "loss": 0.25}``;
  strings, booleans, lists and nested objects are passed over);
- in either, a ``step`` (else ``epoch``) field is the step of the others, not a metric itself.

A line that merely holds numbers in prose (``Loading 3 files``, ``Epoch 3/10 done in 5s``,
``INFO:train:loss: 0.25``, ``acc: 91%``) is not taken. Names start with a letter or ``_`` and
hold letters, digits and ``_ . / -``, at most :data:`MAX_NAME` characters. ANSI escapes (colours,
cursor moves of tqdm and rich) are stripped first. A line longer than :data:`MAX_LINE` characters
is passed over unread, and NaN and infinite values are skipped, so each line costs bounded work
and nothing here raises.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

MAX_LINE = 4096
"""Longest line read for metrics, in characters; longer ones are passed over unread."""
MAX_NAME = 100
"""Longest metric name, in characters."""
STEP_FIELDS = ("step", "epoch")
"""Fields that give the step of a line's metrics, the first one present winning."""

_NAME = rf"[A-Za-z_][A-Za-z0-9_./-]{{0,{MAX_NAME - 1}}}"
_NUMBER = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|infinity|inf))"
_PAIR = rf"({_NAME})\s*[:=]\s*({_NUMBER})"
_SEP = r"(?:\s*[,;|]\s*|\s+)"
_PAIRS_LINE = re.compile(rf"{_PAIR}(?:{_SEP}{_PAIR})*")
_ONE_PAIR = re.compile(_PAIR)
_NAME_ONLY = re.compile(_NAME)
_NUMBER_ONLY = re.compile(_NUMBER)
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


@dataclasses.dataclass(frozen=True)
class Reading:
    """The metrics one line gave, in order, and the step it named (None: it named none)."""

    values: tuple[tuple[str, float], ...]
    step: float | None = None


def parse_line(line: str) -> Reading | None:
    """The metrics ``line`` consists of, or None when it is not a metrics line."""
    if len(line) > MAX_LINE:
        return None
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    text = line.strip()
    if not text:
        return None
    if text[0] == "{":
        return _json_line(text) if text[-1] == "}" else None
    if ("=" not in text and ":" not in text) or not _ends_in_number(text):
        return None  # the cheap test that turns away almost every line of prose
    if _PAIRS_LINE.fullmatch(text) is None:
        return None
    return _reading((m.group(1), float(m.group(2))) for m in _ONE_PAIR.finditer(text))


def parse_fields(fields: dict[Any, Any], *, text: bool = False) -> Reading | None:
    """The metrics of one decoded record (a JSON object, a CSV row): its numeric fields whose
    keys are metric names. With ``text``, fields hold text (a CSV row's) that may be numbers."""
    pairs = []
    for key, value in fields.items():
        if not isinstance(key, str) or _NAME_ONLY.fullmatch(key) is None:
            continue
        number = _text_number(value) if text else _number(value)
        if number is not None:
            pairs.append((key, number))
    return _reading(pairs)


def _ends_in_number(text: str) -> bool:
    last = text[-1]
    return last.isdigit() or last == "." or text[-3:].lower() in ("nan", "inf", "ity")


def _json_line(text: str) -> Reading | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return parse_fields(data) if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer past float's range
        return None


def _text_number(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > 64 or _NUMBER_ONLY.fullmatch(value) is None:
        return None
    return float(value)


def _reading(pairs: Any) -> Reading | None:
    step: float | None = None
    steps: dict[str, float] = {}
    values = []
    for name, value in pairs:
        if name in STEP_FIELDS:
            steps[name] = value
        elif math.isfinite(value):
            values.append((name, value))
    for field in STEP_FIELDS:
        if field in steps:
            step = steps[field] if math.isfinite(steps[field]) else None
            break
    if not values and step is None:
        return None
    return Reading(tuple(values), step)
