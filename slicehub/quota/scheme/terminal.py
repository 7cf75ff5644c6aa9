"""What the scheme's applicants typed, made safe and readable in a terminal. Pure.

Decides how text from the database is shown by `slicehub scheme …`: every character a terminal
would act on rather than show (C0 and C1 controls such as ESC, DEL, the line and paragraph
separators, format characters such as the bidi overrides U+202E and U+2066 or zero-width
spaces) is written as an escape, ``\\x1b`` or ``\\u202e``, so a title cannot recolour the
screen, move the cursor, overwrite a line with a carriage return or reverse the text after it.
Input checks already refuse controls in one-line fields, but multi-line fields keep line
breaks, tabs and carriage returns, and nothing refuses a bidi override; the output does not
rely on either. Columns are padded by the width a terminal gives each character (two for
Chinese, none for a combining accent), so a table of Hong Kong organisations stays aligned.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# control, format, line and paragraph separators, lone surrogates
_ACTED_ON = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
ELLIPSIS = "…"


def escape(text: str) -> str:
    """`text` on one line, each character a terminal acts on written as an escape."""
    return "".join(_escaped(c) for c in text)


def _escaped(c: str) -> str:
    if unicodedata.category(c) not in _ACTED_ON:
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def lines(text: str, indent: str = "  ") -> list[str]:
    """Multi-line `text` as indented lines: its line breaks (LF, CRLF or a lone CR) start new
    lines, tabs become spaces, anything else a terminal acts on is escaped."""
    return [indent + escape(line.expandtabs(4)).rstrip() for line in _LINE_BREAK.split(text)]


def width(text: str) -> int:
    """The columns `text` takes in a terminal (escape it first)."""
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def fit(text: str, columns: int) -> str:
    """Escaped `text` cut to at most `columns` columns, with an ellipsis where it was cut."""
    shown = escape(text)
    if width(shown) <= columns:
        return shown
    out, used = [], 0
    for c in shown:
        w = _char_width(c)
        if used + w > columns - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + ELLIPSIS


def table(columns: Sequence[tuple[str, int, str]], rows: Sequence[Sequence[object]]) -> list[str]:
    """Rows as lines of aligned columns under a header. Each column is (header, the most
    columns it may take, "<" to align left or ">" right); each cell is escaped and cut."""
    cells = [
        [fit(str(v), most) for v, (_, most, _) in zip(row, columns, strict=True)] for row in rows
    ]
    sizes = [
        max([width(head), *(width(r[i]) for r in cells)]) for i, (head, _, _) in enumerate(columns)
    ]
    out = []
    for row in [[head for head, _, _ in columns], *cells]:
        parts = []
        for cell, size, (_, _, align) in zip(row, sizes, columns, strict=True):
            pad = " " * (size - width(cell))
            parts.append(pad + cell if align == ">" else cell + pad)
        out.append("  ".join(parts).rstrip())
    return out
