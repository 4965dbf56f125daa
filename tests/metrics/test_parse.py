"""Which output lines are metrics: the README's rule, example by example, and any text at all."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overnight.metrics.parse import MAX_LINE, MAX_NAME, Reading, parse_fields, parse_line

TAKEN = [
    ("loss: 0.25", Reading((("loss", 0.25),))),
    ("loss=0.25", Reading((("loss", 0.25),))),
    ("  val/loss = -1.5e-3  ", Reading((("val/loss", -0.0015),))),
    ("epoch=3 loss=0.25 acc=0.91", Reading((("loss", 0.25), ("acc", 0.91)), 3.0)),
    ("loss: 0.25, acc: 0.91", Reading((("loss", 0.25), ("acc", 0.91)))),
    ("step: 7 | lr: 1e-3; top-5=.5", Reading((("lr", 0.001), ("top-5", 0.5)), 7.0)),
    ("step=10 epoch=2 loss=1", Reading((("loss", 1.0),), 10.0)),  # step wins over epoch
    ("step: 10", Reading((), 10.0)),  # a step alone: the step of the lines after it
    ("\x1b[1;32mloss=0.5\x1b[0m", Reading((("loss", 0.5),))),
    ("loss=nan acc=0.5", Reading((("acc", 0.5),))),  # NaN passed over, the rest taken
    ('{"step": 3, "loss": 0.25, "phase": "train", "ok": true}', Reading((("loss", 0.25),), 3.0)),
    ('  {"epoch": 1, "acc": 1, "nested": {"x": 1}, "l": [1]}', Reading((("acc", 1.0),), 1.0)),
]

NOT_TAKEN = [
    "Loading 3 files",
    "Epoch 3/10 done in 5s",
    "INFO:train:loss: 0.25",
    "[12:00:01] loss=0.25",
    "acc: 91%",
    "time: 12:30",
    "loss 0.25",
    "loss=0.25 done",
    "3: loss",
    "loss=",
    "a=1 b",
    "=0.5",
    "x" * (MAX_NAME + 1) + "=1",
    "loss=inf",
    "loss=nan",
    '{"loss": 1e999}',
    '{"loss": "0.25"}',
    '{"loss": 0.25',
    "[1, 2]",
    '{"phase": "train"}',
    "",
    "   ",
]


@pytest.mark.parametrize(("line", "reading"), TAKEN)
def test_lines_that_are_metrics_are_taken(line: str, reading: Reading) -> None:
    assert parse_line(line) == reading


@pytest.mark.parametrize("line", NOT_TAKEN)
def test_lines_that_merely_hold_numbers_are_not_taken(line: str) -> None:
    assert parse_line(line) is None


def test_a_line_past_the_bound_is_not_read() -> None:
    pairs = " ".join(f"m{i}={i}" for i in range(1000))
    assert len(pairs) > MAX_LINE
    assert parse_line(pairs) is None
    assert parse_line(pairs[: MAX_LINE - 10].rsplit(" ", 1)[0]) is not None


def test_fields_of_a_csv_row_are_read_as_text() -> None:
    row = {"epoch": "2", "val_acc": " 0.5 ", "note": "ok", "bad name": "1", "x": ""}
    assert parse_fields(row, text=True) == Reading((("val_acc", 0.5),), 2.0)
    assert parse_fields({"val_acc": "0.5"}) is None  # JSON text is not a number


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=6000))
def test_no_text_makes_it_raise_and_what_it_takes_is_bounded(text: str) -> None:
    reading = parse_line(text)
    if reading is not None:
        assert len(text) <= MAX_LINE
        assert reading.step is None or math.isfinite(reading.step)
        for name, value in reading.values:
            assert 1 <= len(name) <= MAX_NAME
            assert math.isfinite(value)


PAIR = st.tuples(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,20}", fullmatch=True).filter(
        lambda n: n not in ("step", "epoch")
    ),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(PAIR, min_size=1, max_size=8), st.sampled_from([" ", ", ", " | ", ";"]))
def test_printed_pairs_are_read_back(pairs: list[tuple[str, float]], sep: str) -> None:
    line = sep.join(f"{name}={value!r}" for name, value in pairs)
    assert parse_line(line) == Reading(tuple(pairs))


@pytest.mark.parametrize(
    "line",
    [
        "a=1 " * (MAX_LINE // 4 - 1) + "a=1.",  # the longest line taken: 1,023 pairs
        "a=1 " * (MAX_LINE // 4 - 1) + "a=.",  # ... and one that fails at its very end
        "1" * MAX_LINE,
        "a" * (MAX_LINE - 2) + "=1",
        "\x1b[" * (MAX_LINE // 2),
        "{" + '"a": 1, ' * 500 + "}",
        "[" * (MAX_LINE - 1) + "}",
    ],
)
def test_lines_built_to_be_slow_are_read_in_one_pass(line: str) -> None:
    # Patterns that backtrack would take minutes here (the per-test timeout fails them);
    # bench/metrics.py prints the throughput.
    reading = parse_line(line)
    assert reading is None or len(reading.values) == MAX_LINE // 4
