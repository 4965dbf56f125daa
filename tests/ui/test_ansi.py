from __future__ import annotations

from overnight.ui.ansi import strip, to_html


def test_plain_text_is_escaped() -> None:
    assert to_html('<script>alert("x")</script> & more') == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more"
    )


def test_colours_and_weights_become_classes_and_reset_ends_them() -> None:
    line = "\x1b[1;31merror\x1b[0m: \x1b[92mok\x1b[39m plain"
    assert to_html(line) == (
        '<span class="a-fg1 a-b">error</span>: <span class="a-fg10">ok</span> plain'
    )


def test_extended_colours_map_to_the_sixteen() -> None:
    assert to_html("\x1b[38;5;4mblue\x1b[48;2;255;0;0mred bg") == (
        '<span class="a-fg4">blue</span><span class="a-fg4 a-bg1">red bg</span>'
    )


def test_other_sequences_are_dropped_not_obeyed() -> None:
    hostile = (
        "\x1b]0;new title\x07"  # window title
        "\x1b]8;;https://evil.invalid\x1b\\click\x1b]8;;\x1b\\"  # a planted link
        "\x1b]52;c;c2VjcmV0\x07"  # clipboard write
        "\x1b[2J\x1b[H"  # clear the screen, cursor home
        "\x1bPq#0;2;0;0;0\x1b\\"  # a DCS string (sixel)
        "done"
    )
    assert to_html(hostile) == "clickdone"


def test_stray_control_characters_are_shown() -> None:
    assert to_html("a\rb\x07c\x1b") == "a\\rb\\x07c"
    assert to_html("bell\x9b2J") == "bell\\x9b2J"


def test_a_span_class_never_comes_from_the_line() -> None:
    out = to_html('\x1b[31;"onmouseover=alert(1)m<b>x</b>')
    assert out == "nmouseover=alert(1)m&lt;b&gt;x&lt;/b&gt;"  # ESC [ 31;" o: one CSI, dropped


def test_strip_leaves_the_text() -> None:
    assert strip("\x1b[1mbold\x1b[0m \x1b]0;t\x07x") == "bold x"
