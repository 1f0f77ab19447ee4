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


def rates(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """Sensitivity (tumoral called tumoral) and specificity (reactive called reactive), mean over repeats."""
    predicted = decide(probabilities).astype(bool)
    return float(predicted[:, labels == 1].mean()), float((~predicted[:, labels == 0]).mean())


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
    sensitivity, specificity = rates(full.labels, full.probabilities)
    gain = f.balanced_accuracy.mean - c.balanced_accuracy.mean
    mean = full.mean_probability
    wrong = int((decide(mean) != full.labels).sum())
    unsure = int(((mean > UNCERTAIN[0]) & (mean < UNCERTAIN[1])).sum())
    inputs = "the cell images, age, sex and lymphocyte count" if saved.settings.spec.uses_images else "the clinical attributes"
    says = (f"Each of the {len(full.ids)} labelled patients was predicted by models that never saw them "
            f"({design.folds}-fold cross-validation, repeated {design.repeats} times). With {inputs}, the model "
            f"recognises {sensitivity:.0%} of tumoral and {specificity:.0%} of "
            f"reactive patients: balanced accuracy {f.balanced_accuracy.mean:.3f} (95% CI "
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
