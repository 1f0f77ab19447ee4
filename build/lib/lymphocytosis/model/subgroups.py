"""The patients the lymphocyte count cannot decide, and paired comparisons on the same folds.

On the challenge's 163 labelled patients the highest count of any reactive patient is 7.68 x 10^9/L: above
about 8 nearly every patient is tumoral and the clinical attributes alone decide. What the cell images add
shows among the patients at or below it (the "hard" subgroup), where an average over everyone hides it.
Subgroup metrics are computed on the out-of-fold predictions of those patients from models trained on everyone:
the same CV, read on fewer patients, not a model trained on the subgroup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics import Scores, Summary
from .cohort import Cohort
from .evaluation import CVResult

HARD_LYMPH_COUNT = 8.0  # 10^9 cells/L: at or below, the count alone cannot tell reactive from tumoral


def hard_mask(cohort: Cohort, ids: list[str], limit: float = HARD_LYMPH_COUNT) -> np.ndarray:
    """Which of `ids` have a lymphocyte count at or below `limit`."""
    return cohort.clinical.loc[list(ids), "lymph_count"].to_numpy(dtype=float) <= limit


def per_repeat_scores(result: CVResult, mask: np.ndarray | None = None) -> list[Scores]:
    """Balanced accuracy and AUC of each repeat, on the patients of `mask` (all when None)."""
    keep = np.ones(len(result.ids), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return [Scores.of(result.labels[keep], p[keep]) for p in result.probabilities]


@dataclass(frozen=True)
class PairedSummary:
    """One model against a reference on the same folds: each alone, and their per-repeat difference."""

    model: Summary
    reference: Summary
    difference: Summary  # mean and std over repeats of (model - reference), repeat by repeat

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "reference": self.reference.to_dict(),
                "difference": self.difference.to_dict()}


def paired(result: CVResult, reference: CVResult, mask: np.ndarray | None = None) -> PairedSummary:
    """`result` against `reference` on the same patients and folds (`mask`: a subgroup of them)."""
    if list(result.ids) != list(reference.ids) or result.probabilities.shape != reference.probabilities.shape:
        raise ValueError("paired comparison of results on different patients or repeats")
    ours, theirs = per_repeat_scores(result, mask), per_repeat_scores(reference, mask)
    differences = [Scores(a.balanced_accuracy - b.balanced_accuracy, a.roc_auc - b.roc_auc) for a, b in zip(ours, theirs)]
    return PairedSummary(Summary.of(ours), Summary.of(theirs), Summary.of(differences))

