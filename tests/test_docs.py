"""The README is for newcomers: short, and about the user's world only; every page it links to exists (pages
that other parts of the documentation add are listed in EXPECTED_PAGES until they do).

The words below name the world of the people who wrote the tool, not the user's: which computer a figure was
measured on, what was at hand, work in progress. Documentation says what the tool does and how to check it.
"""

from __future__ import annotations

import re

from conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MY_PAGES = ("accuracy.md", "commands.md", "development.md", "extract.md", "file-formats.md", "tuning.md")
FORBIDDEN = [r"\bsessions?\b", r"\bthis machine\b", r"\bour machine\b", r"\btargets?\b", r"\bissues?\b", r"\blent\b",
             r"from this machine's disk", r"last round of changes", r"\bhelpers?\b", r"where this was written",
             r"\bthe code before\b", r"\bno GPU was (available|lent)\b"]
EVERYWHERE = [r"\bsessions?\b", r"\bthis machine\b", r"\bour machine\b", r"\blent\b", r"last round of changes"]


def hits(text: str, patterns: list[str]) -> list[str]:
    return [f"line {text[:m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
            for pattern in patterns for m in re.finditer(pattern, text, re.IGNORECASE)]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move details to docs/"


def test_readme_and_its_pages_speak_to_users():
    for path in [README, *(DOCS / name for name in MY_PAGES)]:
        found = hits(path.read_text(encoding="utf-8"), FORBIDDEN)
        assert not found, f"{path.name}: {found}"
    for path in sorted(DOCS.glob("*.md")):
        found = hits(path.read_text(encoding="utf-8"), EVERYWHERE)
        assert not found, f"{path.name}: {found}"


def test_readme_keeps_the_two_commands_and_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file() or target in EXPECTED_PAGES, f"README links to missing {target}"
    for name in MY_PAGES:
        page = (DOCS / name).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+\.md)", page):
            assert (DOCS / target).is_file() or f"docs/{target}" in EXPECTED_PAGES, f"{name} links to missing {target}"


def test_accuracy_figures_say_which_patients():
    page = (DOCS / "accuracy.md").read_text(encoding="utf-8")
    assert "120 of the challenge's 163 labelled patients" in page and "held back" in page
    readme = README.read_text(encoding="utf-8")
    assert "120 of the challenge's 163 labelled patients" in readme and "held back" in readme


# Pages written beside these ones; the links are right once they are there.
EXPECTED_PAGES = {"docs/speed.md", "docs/refusals.md", "docs/decision.md", "docs/site-shift.md"}
