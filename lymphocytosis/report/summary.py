"""The report in plain words: what the model says, how sure it is, what the images add; and each push of a
patient's prediction said as a hematologist would."""

from __future__ import annotations

import numpy as np

from ..metrics import THRESHOLD, Interval, decide
from ..model.results import SavedCV
from .document import Mark, Paragraph
from .headline import OPTIMISTIC, Honesty, headline

UNCERTAIN = (0.35, 0.65)  # probabilities this close to the threshold are shown as uncertain calls


def strength(contribution: float) -> str:
    size = abs(contribution)
    return "strongly" if size >= 1.0 else "clearly" if size >= 0.3 else "slightly"


def push_in_words(name: str, contribution: float) -> str:
    """'lymphocyte count = 12.4 ×10⁹/L pushes strongly toward tumoral'."""
    direction = "tumoral" if contribution > 0 else "reactive"
    return f"{name} pushes {strength(contribution)} toward {direction}"


def recognised(labels: np.ndarray, mean_probability: np.ndarray) -> str:
    """Tumoral called tumoral and reactive called reactive, each patient classified by their mean out-of-fold
    probability: the very counts of the page's confusion matrix, so the two never disagree."""
    predicted = decide(mean_probability).astype(bool)
    tumoral, reactive = labels == 1, labels == 0
    hits = int(predicted[tumoral].sum()), int((~predicted[reactive]).sum())
    return (f"{hits[0]} of {int(tumoral.sum())} tumoral ({hits[0] / max(1, tumoral.sum()):.0%}) and {hits[1]} of "
            f"{int(reactive.sum())} reactive patients ({hits[1] / max(1, reactive.sum()):.0%})")


def images_in_words(saved: SavedCV, gain: float, intervals: dict[str, dict[str, Interval]]) -> str:
    """What the images add, said so that a loss reads as a loss and a run without images does not claim any."""
    clinical = saved.comparison.clinical.summary.balanced_accuracy.mean
    if not saved.settings.spec.uses_images:
        return ("This run's feature specification uses no image feature: there is nothing to compare (the "
                f"clinical-only model reaches {clinical:.3f}).")
    if gain > 0.005:
        return (f"The same model without the images reaches {clinical:.3f} (95% CI "
                f"{intervals['clinical']['balanced_accuracy']}): the images add {gain:+.3f} balanced accuracy on the "
                "same patients and folds.")
    if gain < -0.005:
        return (f"Without the images the model reaches {clinical:.3f}: here the images make it worse ({gain:+.3f} on "
                "the same patients and folds); prefer the clinical-only model on such data, or other image features.")
    return f"Without the images the model reaches {clinical:.3f}: here the images add nothing measurable ({gain:+.3f})."


def plain_summary(saved: SavedCV, intervals: dict[str, dict[str, Interval]], honesty: Honesty | None = None) -> list[Paragraph]:
    full, clinical, design = saved.comparison.full, saved.comparison.clinical, saved.comparison.design
    f, c = full.summary, clinical.summary
    gain = f.balanced_accuracy.mean - c.balanced_accuracy.mean
    mean = full.mean_probability
    wrong = int((decide(mean) != full.labels).sum())
    unsure = int(((mean > UNCERTAIN[0]) & (mean < UNCERTAIN[1])).sum())
    inputs = "the cell images, age, sex and lymphocyte count" if saved.settings.spec.uses_images else "the clinical attributes"
    says = (f"Each of the {len(full.ids)} labelled patients was predicted by models that never saw them "
            f"({design.folds}-fold cross-validation, repeated {design.repeats} times). With {inputs}, and each patient "
            f"classified by their mean out-of-fold probability (the confusion matrix below), the model recognises "
            f"{recognised(full.labels, mean)}. Per repeat: balanced accuracy {f.balanced_accuracy.mean:.3f} (95% CI "
            f"{intervals['full']['balanced_accuracy']}), ROC AUC {f.roc_auc.mean:.3f} (95% CI {intervals['full']['roc_auc']})"
            f"{', ' + OPTIMISTIC if honesty else ''}.")
    adds = images_in_words(saved, gain, intervals)
    sure = (f"From one repeat of the cross-validation to the next, balanced accuracy varies by "
            f"{f.balanced_accuracy.std:.3f} (standard deviation). Averaged over the repeats, {wrong} patients are on "
            f"the wrong side of p = {THRESHOLD}, and {unsure} have a probability between {UNCERTAIN[0]} and {UNCERTAIN[1]}: "
            "calls to treat as uncertain.")
    opening = [Paragraph(headline(saved, honesty))] if honesty else []
    return [*opening, Paragraph([Mark("What the model says.", "strong"), " ", says]),
            Paragraph([Mark("What the images add.", "strong"), " ", adds]),
            Paragraph([Mark("How sure.", "strong"), " ", sure])]
