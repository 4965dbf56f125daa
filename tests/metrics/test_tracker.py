"""One run's metrics as they come: summaries and series per name, names bounded."""

from __future__ import annotations

from overnight.metrics.parse import Reading
from overnight.metrics.summary import MetricSummary
from overnight.metrics.tracker import MetricTracker


def test_values_are_summarised_at_their_step_or_the_given_one() -> None:
    clock = iter([10.0, 11.0, 12.5]).__next__
    tracker = MetricTracker(clock=clock)  # started at 10
    tracker.add(Reading((("loss", 2.0), ("acc", 0.1)), step=1.0))
    tracker.add(Reading((("loss", 1.0),)), step=5.0)
    assert tracker.summaries() == {
        "loss": MetricSummary(1.0, 1.0, 2.0, 2, 5.0, 5.0, 1.0),
        "acc": MetricSummary.first(0.1, 1.0),
    }
    assert tracker.series() == {
        "loss": [[1.0, 1.0, 2.0], [2.5, 5.0, 1.0]],
        "acc": [[1.0, 1.0, 0.1]],
    }
    assert tracker.version == 3


def test_names_past_the_bound_are_counted_and_passed_over() -> None:
    tracker = MetricTracker(max_names=3)
    tracker.add(Reading(tuple((f"m{i}", float(i)) for i in range(5))))
    tracker.add(Reading((("m0", 5.0), ("m9", 1.0))))
    assert sorted(tracker.summaries()) == ["m0", "m1", "m2"]
    assert tracker.summaries()["m0"].last == 5.0
    assert tracker.ignored == 3


def test_a_resumed_run_goes_on_from_its_record() -> None:
    tracker = MetricTracker(started=0.0, clock=lambda: 5.0)
    tracker.resume(
        {"loss": MetricSummary(1.0, 1.0, 3.0, 2)}, {"loss": [[1.0, None, 3.0], [2.0, None, 1.0]]}
    )
    tracker.add(Reading((("loss", 0.5),)))
    assert tracker.summaries()["loss"] == MetricSummary(0.5, 0.5, 3.0, 3)
    assert tracker.series()["loss"] == [[1.0, None, 3.0], [2.0, None, 1.0], [5.0, None, 0.5]]
