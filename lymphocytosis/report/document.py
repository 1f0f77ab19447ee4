"""A neutral document model: what the report says, built once, written as HTML and as Markdown.

Both renderers walk the same `Document`, so the two files cannot state different numbers (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Mark:
    """Emphasised text; `kind` is "ok" (correct), "bad" (wrong, warning) or "strong"."""

    text: str
    kind: str = "strong"


Inline = str | Link | Code | Mark
Cell = Inline | list  # a table cell: one inline or a list of them


@dataclass
class Paragraph:
    content: list[Inline]
    muted: bool = False  # an explanation under a heading, smaller and grey in HTML


@dataclass
class Heading:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    numeric: tuple[int, ...] = ()  # columns aligned right
    scroll: bool = False  # long tables scroll inside the HTML page
    row_headers: bool = False  # first column names the row (provenance)


@dataclass
class Image:
    src: str  # relative to the report folder
    alt: str
    caption: str = ""
    width: int | None = None


@dataclass
class Card:
    label: str
    value: str
    note: str = ""


@dataclass
class Cards:
    cards: list[Card]


@dataclass
class Bar:
    """One SHAP push: a feature and its value, the push (log-odds) and its length relative to the largest."""

    label: str
    value: float
    fraction: float


@dataclass
class Bars:
    title: str
    bars: list[Bar]
    positive: bool  # towards tumoral (True) or reactive (False)


@dataclass
class GalleryItem:
    src: str | None
    file: str
    caption: str
    problem: str | None = None
    href: str | None = None  # what the thumbnail opens: the whole image


@dataclass
class Gallery:
    title: str
    items: list[GalleryItem]


@dataclass
class Columns:
    """Blocks side by side in HTML (one after the other in Markdown)."""

    columns: list[list]
    layout: str = "figs"  # CSS class: "figs" (wrapping row) or "grid2" (two columns)


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    lede: Paragraph
    nav: list[Link]
    sections: list[Section]
    banner: str | None = None  # a warning shown above everything (e.g. SYNTHETIC data)
