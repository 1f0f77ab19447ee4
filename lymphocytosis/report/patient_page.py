"""One page per patient (patients/<ID>.html): the out-of-fold call, why, in words, and the cells behind it."""

from __future__ import annotations

from ..metrics import format_probability
from .document import Bar, Bars, Columns, Document, Gallery, GalleryItem, Link, Mark, Paragraph, Section
from .naming import CELL_SCORE_SCALE, CLASS_NAMES
from .summary import push_in_words
from .views import PatientView

LOG_ODDS = ("Each push is a SHAP value in log-odds, from the held-out models averaged over the repeats: +0.7 doubles "
            "the odds of tumoral, -0.7 halves them; the pushes add up from the cohort's starting point to this patient's "
            "prediction.")


def verdict(view: PatientView) -> Mark:
    if view.correct:
        return Mark(f"correctly called {CLASS_NAMES[view.predicted]}", "ok")
    return Mark(f"wrongly called {CLASS_NAMES[view.predicted]}", "bad")


def pushes(view: PatientView, scale: float) -> list:
    words = [push_in_words(name, value) for name, value in sorted((*view.up, *view.down), key=lambda x: -abs(x[1]))[:3]]
    sentence = ("; ".join(words) + ".") if words else "No feature moves this prediction noticeably."
    return [Paragraph([sentence[0].upper() + sentence[1:]]),
            Columns([[Bars("towards tumoral", [Bar(n, c, abs(c) / scale) for n, c in view.up], True)],
                     [Bars("towards reactive", [Bar(n, c, abs(c) / scale) for n, c in view.down], False)]]),
            Paragraph([LOG_ODDS + f" Here: from {view.base:+.2f} to {view.logit:+.2f}."], muted=True)]


def cells(view: PatientView, cell_note: str) -> list:
    if view.cells is None:
        return [Paragraph([cell_note], muted=True)]
    median = "" if view.median_cell_score is None else f" This patient's median cell score: {view.median_cell_score:.2f}."
    blocks = [Paragraph([f"The held-out cell score of each cell: {CELL_SCORE_SCALE}. Thumbnails show the part of each "
                         f"image the network saw; click one for the whole image.{median}"], muted=True)]
    for title, items in (("most tumoral-looking (highest cell score)", view.cells.top),
                         ("least tumoral-looking (lowest)", view.cells.bottom)):
        blocks.append(Gallery(title, [GalleryItem(f"../{c.src}" if c.src else None, c.file, f"{c.score:.2f}", c.problem,
                                                  f"../{c.full}" if c.full else None) for c in items]))
    return blocks


def patient_document(view: PatientView, scale: float, cell_note: str, banner: str | None) -> Document:
    summary = Paragraph([f"True class: {CLASS_NAMES[view.label]} (label {view.label}). Out-of-fold probability of tumoral "
                         f"{format_probability(view.probability)} ± {view.spread:.2f} (mean ± std over repeats): ",
                         verdict(view), f". The clinical-only model gives {format_probability(view.clinical_probability)}."])
    return Document(
        title=f"Patient {view.patient_id}",
        lede=summary,
        nav=[Link("← report", "../index.html"), Link("all patients", "../index.html#patients")],
        sections=[
            Section("clinical", "Clinical values", [Paragraph([f"{view.clinical}; {view.n_cells} cells."])]),
            Section("why", "Why this call", pushes(view, scale)),
            Section("cells", "Cells", cells(view, cell_note)),
        ],
        banner=banner,
    )
