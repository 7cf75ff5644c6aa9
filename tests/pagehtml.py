"""Reading the quota service's HTML pages in tests: tables by caption, the elements' attributes,
and the checks every page must pass (labels on controls, header cells with a scope, charts with
a title and a description)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"meta", "link", "br", "input", "img", "hr", "source", "wbr", "col", "area"}
SVG_EMPTY = {"line", "rect", "path", "circle"}  # written as <x .../> inside the chart


@dataclass
class Table:
    caption: str = ""
    rows: list[list[str]] = field(default_factory=list)  # cells' text, header cells included


class Page(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.tables: list[Table] = []
        self.text_parts: list[str] = []
        self.svg_titles: list[str] = []
        self._open: list[str] = []
        self._table: list[Table] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._svg_title: list[str] | None = None
        self.feed(html)
        self.close()
        assert not self._open, f"elements left open: {self._open}"

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.text_parts))

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.elements.append((tag, a))
        if tag not in VOID:
            self._open.append(tag)
        if tag == "table":
            self._table.append(Table())
            self.tables.append(self._table[-1])
        elif tag == "tr" and self._table:
            self._table[-1].rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._caption = []
        elif tag == "title" and "svg" in self._open and len(self._open) >= 2:
            if self._open[-2] == "svg":  # the chart's own title, not a bar's
                self._svg_title = []

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: (v or "") for k, v in attrs}))

    def handle_endtag(self, tag):
        assert self._open, f"</{tag}> closes nothing"
        assert self._open[-1] == tag, f"</{tag}> closes <{self._open[-1]}>"
        self._open.pop()
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].rows[-1].append(re.sub(r"\s+", " ", "".join(self._cell)).strip())
            self._cell = None
        elif tag == "caption" and self._caption is not None:
            self._table[-1].caption = re.sub(r"\s+", " ", "".join(self._caption)).strip()
            self._caption = None
        elif tag == "table":
            self._table.pop()
        elif tag == "title" and self._svg_title is not None:
            self.svg_titles.append("".join(self._svg_title).strip())
            self._svg_title = None

    def handle_data(self, data):
        self.text_parts.append(data)
        for part in (self._cell, self._caption, self._svg_title):
            if part is not None:
                part.append(data)

    def table(self, caption_start: str) -> Table:
        found = [t for t in self.tables if t.caption.startswith(caption_start)]
        assert len(found) == 1, (caption_start, [t.caption for t in self.tables])
        return found[0]

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.elements if t == tag]


def check_accessible(page: Page) -> None:
    """What every page of the service must do for people who use a keyboard or a reader."""
    ids = [a["id"] for _, a in page.elements if "id" in a]
    assert len(ids) == len(set(ids)), "ids must be unique"
    labelled = {a.get("for") for a in page.all("label")}
    for tag in ("input", "select", "textarea"):
        for a in page.all(tag):
            if a.get("type") != "hidden":
                assert a.get("id") in labelled, f"<{tag}> without a label: {a}"
    assert all(t.caption for t in page.tables), "every table has a caption"
    assert all("scope" in a for a in page.all("th")), "every header cell has a scope"
    for svg in page.all("svg"):
        assert svg.get("role") == "img"
        assert set(svg["aria-labelledby"].split()) <= set(ids)
    for _, a in page.elements:
        assert not any(k.startswith("on") for k in a), "no inline event handlers"
    assert page.all("html")[0].get("lang") == "en"
