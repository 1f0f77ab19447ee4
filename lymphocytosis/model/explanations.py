"""What a CV's held-out models say about each feature and patient: SHAP values, gain and per-cell scores.

Everything is out-of-fold: a patient is explained by the models that never saw it, averaged over repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .evaluation import CVResult
from .tables import FeatureColumn
from .threads import ordered_results


@dataclass
class Explanations:
    """Aligned with the CV's patient order (`ids`)."""

    ids: list[str]
    columns: list[FeatureColumn]
    gain_share: np.ndarray  # (n_fold_models, F): each fold model's gain, as a fraction of its total
    shap: np.ndarray  # (repeats, n_patients, F + 1): held-out contributions (log-odds), last = base value
    values: np.ndarray  # (repeats, n_patients, F): the held-out feature values those came from
    cell_scores: dict[str, dict[str, np.ndarray]]  # backbone -> patient -> each cell's held-out score, repeat mean

    @property
    def patient_shap(self) -> np.ndarray:
        """(n_patients, F + 1) contributions averaged over repeats: one stable explanation per patient."""
        return np.nanmean(self.shap, axis=0)

    @property
    def patient_values(self) -> np.ndarray:
        return np.nanmean(self.values, axis=0)


def explain(cv: CVResult) -> Explanations:
    """Gain and SHAP values of every fold's model on that fold's held-out patients, and their cell scores."""
    kept = [f for f in cv.folds if f.model is not None]
    if not kept or len(kept) != len(cv.folds):
        raise ValueError("the CV result has no fold models; run it with keep_models=True")
    columns = kept[0].model.columns
    position = {patient_id: i for i, patient_id in enumerate(cv.ids)}
    repeats, n = cv.probabilities.shape
    shap = np.full((repeats, n, len(columns) + 1), np.nan)
    values = np.full((repeats, n, len(columns)), np.nan)
    sums: dict[tuple[str, str], np.ndarray] = {}  # (backbone, patient) -> sum of held-out scores over repeats
    counts: dict[tuple[str, str], int] = {}
    for result in kept:
        if result.model.columns != columns:
            raise ValueError(f"fold {result.fold.repeat}/{result.fold.fold}: feature columns differ from the first fold's")
    # each fold's SHAP values and gains on its own (LightGBM, without the GIL): folds in threads, like the CV's
    with ordered_results(lambda r: (r.model.contributions(r.prediction.table), r.model.gain_share()), kept) as parts:
        contributions, gains = zip(*parts)
    for result, contribution in zip(kept, contributions):
        table = result.prediction.table
        rows = [position[patient_id] for patient_id in table.ids]
        shap[result.fold.repeat, rows] = contribution
        values[result.fold.repeat, rows] = table.values
        for backbone, scores in table.cell_scores.items():
            for patient_id, score in scores.items():
                key = (backbone, patient_id)
                sums[key] = sums.get(key, 0.0) + np.asarray(score, np.float64)
                counts[key] = counts.get(key, 0) + 1
    cell_scores: dict[str, dict[str, np.ndarray]] = {}
    for (backbone, patient_id), total in sums.items():
        cell_scores.setdefault(backbone, {})[patient_id] = total / counts[(backbone, patient_id)]
    return Explanations(list(cv.ids), list(columns), np.array(gains), shap, values, cell_scores)
