"""A log line as HTML: its SGR colours and weights become ``<span class>``s, every other escape
sequence (cursor moves, titles, OSC 8 links, OSC 52 clipboard writes) is dropped, never obeyed,
and the text is escaped (and its control characters made visible, as on the terminal).

Classes only, never inline styles from the line: ``a-fg1`` .. ``a-fg15``, ``a-bg0`` ..
``a-bg15``, ``a-b`` (bold), ``a-d`` (dim), ``a-i`` (italic), ``a-u`` (underline); ``ui.css``
colours them.
"""

from __future__ import annotations

import dataclasses
import html
import re

from overnight.terminal import visible

_SEQUENCE = re.compile(
    r"\x1b\[(?P<csi>[0-?]*)(?P<inter>[ -/]*)(?P<final>[@-~])"  # CSI, SGR among them
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: titles, links, clipboard
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)


@dataclasses.dataclass
class _Style:
    fg: int | None = None
    bg: int | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def classes(self) -> str:
        names = []
        if self.fg is not None:
            names.append(f"a-fg{self.fg}")
        if self.bg is not None:
            names.append(f"a-bg{self.bg}")
        for flag, name in (
            (self.bold, "a-b"),
            (self.dim, "a-d"),
            (self.italic, "a-i"),
            (self.underline, "a-u"),
        ):
            if flag:
                names.append(name)
        return " ".join(names)

    def apply(self, params: str) -> None:
        codes = [int(p) if p.isdigit() else 0 for p in params.replace(":", ";").split(";")]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.__init__()  # type: ignore[misc]
            elif code in (1, 2, 3, 4):
                setattr(self, ("bold", "dim", "italic", "underline")[code - 1], True)
            elif code == 22:
                self.bold = self.dim = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif 30 <= code <= 37 or 90 <= code <= 97:
                self.fg = code - 30 if code < 90 else code - 82
            elif 40 <= code <= 47 or 100 <= code <= 107:
                self.bg = code - 40 if code < 100 else code - 92
            elif code == 39:
                self.fg = None
            elif code == 49:
                self.bg = None
            elif code in (38, 48):  # 256 colours (5;n) and true colour (2;r;g;b): the nearest
                colour, used = _extended(codes[i + 1 :])
                if colour is not None:
                    if code == 38:
                        self.fg = colour
                    else:
                        self.bg = colour
                i += used
            i += 1


def _extended(rest: list[int]) -> tuple[int | None, int]:
    """A 256-colour or true-colour SGR argument as one of the 16 colours, and how many numbers
    it took."""
    if rest[:1] == [5] and len(rest) >= 2:
        n = rest[1]
        return (n if n < 16 else None), 2
    if rest[:1] == [2] and len(rest) >= 4:
        r, g, b = rest[1:4]
        colour = (1 if r > 127 else 0) + (2 if g > 127 else 0) + (4 if b > 127 else 0)
        return colour, 4
    return None, len(rest)


def to_html(line: str) -> str:
    """``line`` as safe HTML: escaped text in spans for its colours; no sequence survives."""
    out: list[str] = []
    style = _Style()
    position = 0

    def text(chunk: str) -> None:
        if not chunk:
            return
        shown = html.escape(visible(chunk), quote=True)
        classes = style.classes()
        out.append(f'<span class="{classes}">{shown}</span>' if classes else shown)

    for match in _SEQUENCE.finditer(line):
        text(line[position : match.start()])
        position = match.end()
        if match.group("final") == "m" and not match.group("inter"):
            style.apply(match.group("csi"))
    text(line[position:])
    return "".join(out)


def strip(line: str) -> str:
    """``line`` without its escape sequences (what search matches against)."""
    return _SEQUENCE.sub("", line)
