"""MetricSummary: what a task's record keeps of one metric (its series is stored apart)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class MetricSummary:
    """The last, lowest and highest value of one metric, each with the step it was seen at
    (None where the run gave no step), and how many values were seen. Values are finite."""

    last: float
    min: float
    max: float
    count: int = 1
    last_step: float | None = None
    min_step: float | None = None
    max_step: float | None = None

    def __post_init__(self) -> None:
        for name in ("last", "min", "max"):
            object.__setattr__(self, name, _finite(getattr(self, name), name))
        for name in ("last_step", "min_step", "max_step"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _finite(value, name))
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"metric count must be a positive integer, not {self.count!r}")
        if not self.min <= self.last <= self.max:
            raise ValueError(f"metric last {self.last} is outside [{self.min}, {self.max}]")

    @classmethod
    def first(cls, value: float, step: float | None = None) -> MetricSummary:
        """The summary of a metric seen once."""
        return cls(value, value, value, 1, step, step, step)

    def updated(self, value: float, step: float | None = None) -> MetricSummary:
        """This summary with one more value seen (ties keep the earliest min and max)."""
        low = value < self.min
        high = value > self.max
        return MetricSummary(
            last=value,
            min=value if low else self.min,
            max=value if high else self.max,
            count=self.count + 1,
            last_step=step,
            min_step=step if low else self.min_step,
            max_step=step if high else self.max_step,
        )

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form: steps that are None are left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricSummary:
        """Build and check a summary; raises ValueError, TypeError or KeyError when malformed."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a metric summary object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown metric summary fields {sorted(unknown)}")
        return cls(
            last=data["last"],
            min=data["min"],
            max=data["max"],
            count=data.get("count", 1),
            last_step=data.get("last_step"),
            min_step=data.get("min_step"),
            max_step=data.get("max_step"),
        )


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric {name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"metric {name} must be finite, not {value}")
    return float(value)
