from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from overnight.agent.run.logbatch import MAX_LINE, LineAssembler, LineEnd, LogBatcher, Partial


def texts(lines: list[tuple[float, str]]) -> list[str]:
    return [text for _, text in lines]


def assemble(chunks: list[bytes], max_line: int = MAX_LINE) -> list[str]:
    asm = LineAssembler(max_line)
    out: list[tuple[float, str]] = []
    for i, chunk in enumerate(chunks):
        out += asm.feed(chunk, float(i))
    out += asm.finish(float(len(chunks)))
    return texts(out)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


plain = st.lists(
    st.text(
        alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=30
    ),
    max_size=8,
)


@given(plain, st.lists(st.integers(min_value=0), max_size=10))
def test_lines_come_out_whole_however_the_bytes_are_chunked(
    lines: list[str], cuts: list[int]
) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    assert assemble(split_at(data, cuts)) == lines


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=10))
def test_any_bytes_decode_like_a_single_replace_decode(data: bytes, cuts: list[int]) -> None:
    expected = data.decode("utf-8", errors="replace").replace("\r", "\n").split("\n")
    got = assemble(split_at(data.replace(b"\r", b"\n"), cuts))
    if expected and expected[-1] == "":
        expected.pop()
    assert got == expected


def test_invalid_utf8_is_replaced_and_split_characters_survive() -> None:
    euro = "€".encode()
    assert assemble([b"ok \xff\xfe bad\n", euro[:1], euro[1:] + b"\n"]) == [
        "ok \ufffd\ufffd bad",
        "€",
    ]


def test_carriage_return_rewrites_keep_the_last_text() -> None:
    assert assemble([b"10%\r20%\r", b"30%\r100%\n", b"next\n"]) == ["100%", "next"]


def test_a_trailing_carriage_return_keeps_what_was_shown() -> None:
    assert assemble([b"50%\r", b"\n"]) == ["50%"]
    assert assemble([b"windows line\r\n"]) == ["windows line"]


@given(st.lists(st.text(alphabet="ab \r", max_size=12), min_size=1, max_size=6))
def test_collapsed_line_is_the_last_nonempty_rewrite(rewrites: list[str]) -> None:
    line = "".join(rewrites)
    shown = [seg for seg in line.split("\r") if seg]
    assert assemble([line.encode() + b"\n"]) == [shown[-1] if shown else ""]


def test_long_lines_are_split_at_the_limit() -> None:
    assert assemble([b"a" * 25 + b"\n"], max_line=10) == ["a" * 10, "a" * 10, "a" * 5]
    assert assemble([b"b" * 10 + b"\n"], max_line=10) == ["b" * 10]


def test_endless_progress_without_newline_stays_small() -> None:
    asm = LineAssembler(max_line=100)
    for i in range(10_000):
        assert asm.feed(f"\rstep {i}".encode(), 0.0) == []
    assert asm.partial == "step 9999"


def test_taking_a_partial_line_then_finishing_it() -> None:
    asm = LineAssembler()
    asm.feed(b"epoch 1: ", 1.0)
    assert asm.take_partial(2.0) == (1.0, "epoch 1: ")
    assert asm.take_partial(2.5) is None
    assert texts(asm.feed(b"loss 0.5\n", 3.0)) == ["loss 0.5"]


def test_pieces_of_a_line_are_marked_so_readers_can_put_them_together() -> None:
    asm = LineAssembler(max_line=10)
    asm.feed(b"loss: 0.", 1.0)
    first = asm.take_partial(1.5)
    assert first is not None and isinstance(first[1], Partial)
    end = asm.feed(b"25\nwhole\n" + b"x" * 12 + b"\n", 2.0)
    assert [type(text) for _, text in end] == [LineEnd, str, Partial, LineEnd]
    assert "".join(text for _, text in [first, *end[:1]]) == "loss: 0.25"
    assert end[3][1] == "xx"


def test_a_progress_bar_shown_as_partial_then_closed_adds_no_empty_line() -> None:
    asm = LineAssembler()
    asm.feed(b"\r 40%", 1.0)
    assert asm.take_partial(1.5) == (1.0, " 40%")
    assert asm.feed(b"\n", 2.0) == []
    assert texts(asm.feed(b"\n", 3.0)) == [""]  # a real empty line still counts


def test_line_timestamps_are_when_the_line_ended() -> None:
    asm = LineAssembler()
    assert asm.feed(b"one\ntw", 5.0) == [(5.0, "one")]
    assert asm.feed(b"o\n", 6.0) == [(6.0, "two")]


def test_batch_is_due_after_the_interval_since_its_oldest_line() -> None:
    batcher = LogBatcher(flush_interval=0.5, flush_bytes=1000)
    assert batcher.deadline() is None
    batcher.feed(b"a\n", 10.0)
    batcher.feed(b"b\n", 10.3)
    assert batcher.deadline() == 10.5
    assert not batcher.due(10.4)
    assert batcher.due(10.5)
    assert texts(batcher.flush(10.5)) == ["a", "b"]
    assert batcher.deadline() is None


def test_batch_is_due_when_big_enough() -> None:
    batcher = LogBatcher(flush_interval=100, flush_bytes=10)
    batcher.feed(b"12345\n", 0.0)
    assert not batcher.due(0.0)
    batcher.feed(b"6789\n", 0.0)
    assert batcher.due(0.0)


def test_partial_line_has_its_own_deadline_and_goes_out_then() -> None:
    batcher = LogBatcher(flush_interval=0.5)
    batcher.feed(b"downloading... ", 1.0)
    assert batcher.deadline() == 1.5
    assert batcher.due(1.5)
    assert texts(batcher.flush(1.5)) == ["downloading... "]
    batcher.feed(b"done\n", 2.0)
    assert texts(batcher.flush(2.6)) == ["done"]


def test_a_line_just_begun_is_not_cut_by_a_flush() -> None:
    batcher = LogBatcher(flush_interval=0.5, partial_min_age=0.05)
    batcher.feed(b"old\n", 1.0)
    batcher.feed(b"hel", 1.49)
    assert texts(batcher.flush(1.5)) == ["old"]
    batcher.feed(b"lo\n", 1.51)
    assert texts(batcher.close(1.6)) == ["hello"]


def test_close_returns_the_unterminated_last_line() -> None:
    batcher = LogBatcher()
    batcher.feed(b"x\nno newline", 0.0)
    assert texts(batcher.close(0.0)) == ["x", "no newline"]
