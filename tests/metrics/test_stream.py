"""Output lines in order: the step carries over, lines sent in pieces are read whole."""

from __future__ import annotations

from overnight.metrics.parse import MAX_LINE
from overnight.metrics.stream import MetricStream
from overnight.metrics.summary import MetricSummary
from overnight.metrics.tracker import MetricTracker


def _stream() -> MetricStream:
    return MetricStream(MetricTracker())


def test_a_step_line_is_the_step_of_later_lines() -> None:
    stream = _stream()
    for line in ("loss: 3", "step: 10", "loss: 2", "Epoch 3/10", "loss=1 step=20", "loss: 0.5"):
        stream.line(line)
    assert stream.tracker.summaries()["loss"] == MetricSummary(0.5, 0.5, 3.0, 4, 20.0, 20.0, None)
    assert [p[1] for p in stream.tracker.series()["loss"]] == [None, 10.0, 20.0, 20.0]


def test_pieces_of_a_line_are_read_together() -> None:
    stream = _stream()
    stream.piece("val_")
    stream.end("loss: 0.5")
    stream.piece("acc: 0.")
    stream.piece("2")
    stream.line("other=1")  # the pieced line ended right after its last piece
    stream.piece("top=3")
    stream.close()
    assert {k: s.last for k, s in stream.tracker.summaries().items()} == {
        "val_loss": 0.5,
        "acc": 0.2,
        "other": 1.0,
        "top": 3.0,
    }


def test_a_line_that_grows_too_long_in_pieces_is_passed_over_whole() -> None:
    stream = _stream()
    stream.piece("x" * MAX_LINE)
    stream.piece("loss=1 ")
    stream.end("acc=2")
    stream.line("ok=1")
    assert list(stream.tracker.summaries()) == ["ok"]
