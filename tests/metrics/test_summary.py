import math

import pytest

from overnight.metrics.summary import MetricSummary


def test_updated_keeps_last_min_max_and_their_steps() -> None:
    summary = MetricSummary.first(0.9, step=0)
    for step, value in enumerate([0.5, 0.7, 0.2, 0.2, 1.4], start=1):
        summary = summary.updated(value, step=step)
    assert summary == MetricSummary(
        last=1.4, min=0.2, max=1.4, count=6, last_step=5, min_step=3, max_step=5
    )


def test_a_metric_without_steps_keeps_none() -> None:
    summary = MetricSummary.first(3).updated(1)
    assert (summary.last, summary.min, summary.max, summary.count) == (1.0, 1.0, 3.0, 2)
    assert summary.last_step is summary.min_step is summary.max_step is None
    assert summary.to_dict() == {"last": 1.0, "min": 1.0, "max": 3.0, "count": 2}


def test_round_trips_through_its_dict() -> None:
    summary = MetricSummary.first(2.5, step=10).updated(1.5, step=20)
    assert MetricSummary.from_dict(summary.to_dict()) == summary


@pytest.mark.parametrize(
    "data",
    [
        {"last": "1", "min": 1, "max": 1},
        {"last": True, "min": 1, "max": 1},
        {"last": math.nan, "min": 1, "max": 1},
        {"last": 1, "min": 1, "max": math.inf},
        {"last": 1, "min": 1, "max": 1, "count": 0},
        {"last": 5, "min": 1, "max": 2},
        {"last": 1, "min": 1, "max": 1, "step": 3},
        {"min": 1, "max": 1},
        ["last", 1],
    ],
)
def test_malformed_summaries_are_refused(data: object) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        MetricSummary.from_dict(data)  # type: ignore[arg-type]
