"""The report document as one self-contained HTML page: Jinja2 template and stylesheet are package files; no
script, font or style from the network, so the page opens from disk or from an archive."""

from __future__ import annotations

from importlib import resources
from urllib.parse import quote

import jinja2

from .document import Document


def kind(item) -> str:
    return "list" if isinstance(item, list) else type(item).__name__


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("lymphocytosis.report", "templates"),
                             autoescape=True, trim_blocks=False, lstrip_blocks=False, undefined=jinja2.StrictUndefined)
    env.globals["kind"] = kind
    env.filters["url"] = lambda href: quote(str(href), safe="/#:?=&.-_~%")
    return env


def render_html(document: Document) -> str:
    css = resources.files("lymphocytosis.report").joinpath("templates/style.css").read_text(encoding="utf-8")
    return environment().get_template("page.html.j2").render(doc=document, css=css)
