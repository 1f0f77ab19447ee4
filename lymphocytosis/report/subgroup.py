"""What the images add where the lymphocyte count cannot decide, and how much of it survives stain normalisation."""

from __future__ import annotations

from ..contract.provenance import stain_control
from ..model.cohort import Cohort
from ..model.results import SavedCV
from ..model.subgroups import HARD_LYMPH_COUNT, PairedSummary, hard_mask, paired
from .document import Card, Cards, Code, Paragraph
from .naming import COUNT_UNIT


def difference_note(comparison: PairedSummary, metric: str) -> str:
    reference, difference = getattr(comparison.reference, metric), getattr(comparison.difference, metric)
    return f"clinical only: {reference}; difference {difference.mean:+.3f} ± {difference.std:.3f} (paired, per repeat)"


def stain_of(saved: SavedCV) -> str:
    """The stain control of a saved CV's embeddings (the first file's)."""
    return stain_control(next(iter(saved.provenance.values()), {}))


def stain_sentence(saved: SavedCV, stained: SavedCV, cohort: Cohort, here: PairedSummary) -> Paragraph:
    """How much of the images' gain over clinical-only (hard subgroup) remains on stain-normalised images."""
    mask = hard_mask(cohort, stained.comparison.full.ids)
    theirs = paired(stained.comparison.full, stained.comparison.clinical, mask)
    gain, kept = here.difference.balanced_accuracy.mean, theirs.difference.balanced_accuracy.mean
    return Paragraph([
        "Stain control: the same settings on images normalised with ", Code(f"--stain {stain_of(stained)}"),
        f" reach a balanced accuracy of {stained.comparison.full.summary.balanced_accuracy} overall and "
        f"{theirs.model.balanced_accuracy} on the hard subgroup ({here.model.balanced_accuracy} here): "
        f"of the images' gain over clinical-only there ({gain:+.3f}), {kept:+.3f} survives stain normalisation."])


def subgroup_blocks(saved: SavedCV, cohort: Cohort, stained: SavedCV | None = None) -> list:
    """Cards for the hard subgroup (full vs clinical-only, paired per repeat), and the stain sentence when a
    stain-normalised run's results are given."""
    full, clinical = saved.comparison.full, saved.comparison.clinical
    mask = hard_mask(cohort, full.ids)
    if mask.sum() == 0 or len(set(full.labels[mask].tolist())) < 2:
        return [Paragraph([f"No hard subgroup to report: fewer than two classes among patients with a lymphocyte "
                           f"count ≤ {HARD_LYMPH_COUNT:g}."], muted=True)]
    comparison = paired(full, clinical, mask)
    label = f"hard subgroup: count ≤ {HARD_LYMPH_COUNT:g}, {int(mask.sum())} patients ({int(full.labels[mask].sum())} tumoral)"
    blocks = [
        Cards([Card(f"balanced accuracy, {label}", str(comparison.model.balanced_accuracy),
                    difference_note(comparison, "balanced_accuracy")),
               Card(f"ROC AUC, {label}", str(comparison.model.roc_auc), difference_note(comparison, "roc_auc"))]),
        Paragraph([f"Above a lymphocyte count of {HARD_LYMPH_COUNT:g} {COUNT_UNIT} nearly every patient is tumoral and the "
                   "clinical attributes decide; what the images add shows below it. These are the out-of-fold "
                   "predictions of those patients from the same models, trained on everyone."], muted=True),
    ]
    if stained is not None:
        blocks.append(stain_sentence(saved, stained, cohort, comparison))
    return blocks
