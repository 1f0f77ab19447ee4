"""External validation: a saved model judged on every labelled patient of another cohort.

The model is used as saved (features, boosters, thresholds, recalibration): nothing is refitted on the new
cohort, so its numbers are what a new site would get. A patient of that cohort who was in the model's training
set (the same ID, or the same cell embeddings under another name) would make it look better than it is: such
patients are refused by name. The clinical-only reference of the decision curve cannot come from the saved model,
so it is a clinical-only model cross-validated within the new cohort (said so where it is shown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics import Scores, bootstrap_estimates, bootstrap_intervals, decide
from .calibration import judge_calibration, reliability
from .classifier import FittedModel
from .cohort import Cohort
from .decision import DecisionRule, cells_fingerprint
from .decision_curve import decision_curves
from .evaluation import CVDesign, cross_validate, design_folds
from .operating_points import judge

CLINICAL_DESIGN = CVDesign(folds=5, repeats=5, seed=0)


def training_overlap(model: FittedModel, cohort: Cohort, ids: list[str]) -> list[str]:
    """Each patient of `ids` who was in the model's training set, described: by ID, or by identical cells."""
    known = model.decision.training_patients
    by_cells = {digest: patient_id for patient_id, digest in known.items() if digest}
    found = []
    for patient_id in ids:
        digest = cells_fingerprint(cohort, patient_id)
        if patient_id in known:
            found.append(f"{patient_id} (same ID)")
        elif digest in by_cells:
            found.append(f"{patient_id} (same cell images as training patient {by_cells[digest]})")
    return found


def check_unseen(model: FittedModel, cohort: Cohort, ids: list[str]) -> None:
    if model.decision is None:
        raise InputError("this model was saved without the list of its training patients, so it cannot be checked that "
                         "the cohort is new to it; refit it with this version of the tool")
    overlap = training_overlap(model, cohort, ids)
    if overlap:
        raise InputError(f"{len(overlap)} patient(s) of this cohort were in the model's training set: "
                         f"{', '.join(overlap[:5])}{', ...' if len(overlap) > 5 else ''}; evaluate on patients the model "
                         "never saw (remove them from the cohort's CSV)")


@dataclass
class External:
    """A saved model's predictions of a labelled cohort, and what they are judged to be worth."""

    ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    rule: DecisionRule
    clinical: np.ndarray | None  # (repeats, patients) out-of-fold clinical-only probabilities, or None (too few)

    @property
    def recalibrated(self) -> np.ndarray:
        return self.rule.recalibration.apply(self.probabilities)


def clinical_reference(cohort: Cohort, model: FittedModel, ids: list[str]) -> np.ndarray | None:
    """Out-of-fold probabilities of a clinical-only model cross-validated within the cohort, or None when a class
    has fewer patients than folds."""
    labels = cohort.labels(ids)
    if np.bincount(labels, minlength=2).min() < CLINICAL_DESIGN.folds:
        return None
    folds = design_folds(cohort, CLINICAL_DESIGN, ids)
    return cross_validate(cohort, model.spec.clinical_only(), model.params, folds).probabilities


def score(model: FittedModel, cohort: Cohort) -> External:
    """The model on every labelled patient of `cohort` (checked unseen before: cli/evaluate.py check_evaluate)."""
    ids = cohort.labelled_ids
    if len(set(cohort.labels(ids).tolist())) < 2:
        raise InputError(f"{cohort.dataset_root}: labelled patients of both classes are needed to evaluate a model "
                         f"({len(ids)} labelled)")
    probabilities = model.predict_proba(cohort, ids).probabilities
    rule = model.decision.rule
    return External(ids, cohort.labels(ids), probabilities, rule, clinical_reference(cohort, model, ids))


def headline(external: External) -> dict:
    """BA (at the balanced threshold) and AUC, with bootstrap intervals over patients."""
    scores = Scores.of(external.labels, external.probabilities)
    intervals = bootstrap_intervals(external.labels, external.probabilities)
    return {metric: {"value": getattr(scores, metric), "low": intervals[metric].low, "high": intervals[metric].high}
            for metric in ("balanced_accuracy", "roc_auc")}


def judged_external(external: External, prevalence: float | None = None) -> dict:
    """The same keys as decision_results.judged, for one model on one cohort (no repeats: one prediction each)."""
    labels, raw = external.labels, external.probabilities[None, :]
    points = {}
    for point in external.rule.operating_points.points:
        thresholds = np.full_like(raw, point.threshold)
        points[point.name] = {"threshold": {"min": point.threshold, "median": point.threshold, "max": point.threshold},
                              **{k: v.to_dict() for k, v in judge(labels, raw, thresholds, prevalence).items()}}
    calibration = {"raw": {k: v.to_dict() for k, v in judge_calibration(labels, raw).items()},
                   "reliability": {"raw": reliability(labels, raw)}}
    curves = {"model": raw}
    if external.rule.recalibrated:
        recalibrated = external.recalibrated[None, :]
        calibration["recalibrated"] = {k: v.to_dict() for k, v in judge_calibration(labels, recalibrated).items()}
        calibration["reliability"]["recalibrated"] = reliability(labels, recalibrated)
        calibration["methods"] = {external.rule.recalibration.method: 1}
        curves["model, recalibrated"] = recalibrated
    if external.clinical is not None:
        curves["clinical only"] = external.clinical
    return {"prevalence": {"cohort": float(labels.mean()), "given": prevalence}, "operating_points": points,
            "calibration": calibration, "decision_curve": decision_curves(labels, curves)}


def clinical_headline(external: External) -> dict | None:
    if external.clinical is None:
        return None
    labels, clinical = external.labels, external.clinical

    def statistics(index):
        return {"balanced_accuracy": float(np.mean([Scores.of(labels[index], p[index]).balanced_accuracy
                                                    for p in clinical]))}

    result = bootstrap_estimates(labels, statistics, n_boot=200)
    return {k: v.to_dict() for k, v in result.items()}


def per_patient_rows(external: External) -> list[dict]:
    rows = []
    for i, patient_id in enumerate(external.ids):
        row = {"ID": patient_id, "LABEL": int(external.labels[i]), "PROBABILITY": round(float(external.probabilities[i]), 6)}
        if external.rule.recalibrated:
            row["RECALIBRATED_PROBABILITY"] = round(float(external.recalibrated[i]), 6)
        for point in external.rule.operating_points.points:
            row[f"TUMORAL_AT_{point.name.upper()}"] = int(external.probabilities[i] >= point.threshold)
        row["CORRECT_AT_BALANCED"] = int(decide(external.probabilities[i]) == external.labels[i])
        rows.append(row)
    return rows
