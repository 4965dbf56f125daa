"""A metric's series: bounded, evenly thinned, its first, last, lowest and highest kept."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from overnight.metrics.series import MetricSeries


def test_a_short_series_keeps_every_point() -> None:
    series = MetricSeries(10)
    for i in range(5):
        series.add(i * 0.5, float(i), 10.0 - i)
    assert series.points() == [(i * 0.5, float(i), 10.0 - i) for i in range(5)]
    assert series.to_json()[1] == [0.5, 1.0, 9.0]


def test_a_long_series_is_thinned_evenly_and_keeps_its_extremes() -> None:
    series = MetricSeries(1000)
    for i in range(100_000):
        value = -5.0 if i == 33_333 else 50.0 if i == 77_777 else float(i % 10)
        series.add(float(i), None, value)
    points = series.points()
    assert len(points) <= 1000
    assert len(points) > 400  # halved at most once past the bound
    seconds = [p[0] for p in points]
    assert seconds == sorted(seconds)
    assert {0.0, 33_333.0, 77_777.0, 99_999.0} <= set(seconds)
    even = [s for s in seconds if s not in (33_333.0, 77_777.0, 99_999.0)]
    assert {b - a for a, b in itertools.pairwise(even)} == {128.0}  # one stride
    assert series.seen == 100_000


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=400), st.integers(4, 50))
def test_any_series_stays_bounded_and_holds_its_extremes(values: list[float], bound: int) -> None:
    series = MetricSeries(bound)
    for i, value in enumerate(values):
        series.add(float(i), None, value)
    kept = [v for _, _, v in series.points()]
    assert len(kept) <= bound
    assert min(kept) == min(values) and max(kept) == max(values)
    assert series.points()[0][0] == 0.0 and series.points()[-1][2] == values[-1]


def test_a_series_goes_on_from_stored_points_and_passes_bad_ones_over() -> None:
    stored = [[0.0, 1, 2.0], [1.0, None, 3.0], ["x", 1, 2], [1, 2], None, [2.0, True, 1.0]]
    series = MetricSeries.from_json(stored)
    assert series.points() == [(0.0, 1.0, 2.0), (1.0, None, 3.0)]
    assert MetricSeries.from_json({"not": "a list"}).points() == []
