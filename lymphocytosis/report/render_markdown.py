"""The report document as Markdown (GitHub flavour): the same content as the HTML page, as plain text."""

from __future__ import annotations

from functools import singledispatch

from .document import Bars, Cards, Code, Columns, Document, Gallery, Heading, Image, Link, Mark, Paragraph, Section, Table


def inline(item) -> str:
    if isinstance(item, list):
        return "".join(inline(i) for i in item)
    if isinstance(item, Link):
        return f"[{item.text}]({item.href})"
    if isinstance(item, Code):
        return f"`{item.text}`"
    if isinstance(item, Mark):  # spaces outside the asterisks, or CommonMark shows them as asterisks
        text = item.text
        core = text.strip()
        return f"{text[:len(text) - len(text.lstrip())]}**{core}**{text[len(text.rstrip()):]}" if core else text
    return str(item)


def cell(item) -> str:
    return inline(item).replace("|", "\\|").replace("\n", " ")


@singledispatch
def block(item) -> list[str]:
    raise TypeError(f"no Markdown for {type(item).__name__}")


@block.register
def _(item: Paragraph) -> list[str]:
    return [inline(item.content), ""]


@block.register
def _(item: Heading) -> list[str]:
    return [f"### {item.text}", ""]


@block.register
def _(item: Table) -> list[str]:
    header = [cell(h) for h in item.header] if any(item.header) else [" "] * len(item.header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # "|SHAP|" escaped: one column
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in item.rows]
    return [*lines, ""]


@block.register
def _(item: Image) -> list[str]:
    return [f"![{item.alt}]({item.src})", "", *([f"*{item.caption}*", ""] if item.caption else [])]


@block.register
def _(item: Cards) -> list[str]:
    return [*(f"- **{c.label}**: {c.value}" + (f" ({c.note})" if c.note else "") for c in item.cards), ""]


@block.register
def _(item: Bars) -> list[str]:
    lines = [f"{item.title}:", ""]
    lines += [f"- {b.label}: {b.value:+.2f}" for b in item.bars] or ["- none"]
    return [*lines, ""]


@block.register
def _(item: Gallery) -> list[str]:
    parts = [(f"[![{c.file}]({c.src})]({c.href}) {c.caption}" if c.href else f"![{c.file}]({c.src}) {c.caption}")
             if c.src else f"({c.problem}: {c.file}) {c.caption}" for c in item.items]
    return [f"{item.title}: " + (" ".join(parts) or "no cells"), ""]


@block.register
def _(item: Columns) -> list[str]:
    return [line for column in item.columns for child in column for line in block(child)]


def section(item: Section) -> list[str]:
    return [f"## {item.title}", "", *(line for child in item.blocks for line in block(child))]


def render_markdown(document: Document) -> str:
    lines = [f"# {document.title}", ""]
    if document.banner:
        lines += [f"> **{document.banner}**", ""]
    lines += block(document.lede)
    for item in document.sections:
        lines += section(item)
    return "\n".join(lines).rstrip() + "\n"
