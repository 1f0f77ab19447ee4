"""Honest accuracy: repeated stratified K-fold over patients, every learned step refitted inside each fold.

A patient is never in both the training and the held-out part of a fold (checked, not assumed), and the
clinical-only model runs on the very same folds, so each result shows what the images add.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from .bag_features import FeatureSpec
from .classifier import THRESHOLD, PatientClassifier
from .cohort import Cohort
from .errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    repeat: int
    fold: int
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


def repeated_folds(ids: list[str], labels: np.ndarray, folds: int, repeats: int, seed: int) -> list[Fold]:
    """Stratified folds over patients, `repeats` times with different shuffles; deterministic in `seed`."""
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    smallest = min(np.bincount(labels, minlength=2))
    if folds < 2 or smallest < folds:
        raise InputError(f"{folds}-fold CV needs at least {folds} patients of each class; the smallest class has {smallest}")
    result = []
    for repeat in range(repeats):
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        for k, (train, test) in enumerate(splitter.split(ids, labels)):
            result.append(Fold(repeat, k, tuple(ids[train]), tuple(ids[test])))
    return result


def score(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    labels = np.asarray(labels)
    predictions = (np.asarray(probabilities) >= THRESHOLD).astype(int)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "roc_auc": float(roc_auc_score(labels, probabilities)) if len(set(labels)) == 2 else float("nan"),
    }


def summarise(per_repeat: list[dict]) -> dict:
    return {
        metric: {"mean": float(np.mean([r[metric] for r in per_repeat])), "std": float(np.std([r[metric] for r in per_repeat]))}
        for metric in ("balanced_accuracy", "roc_auc")
    }


@dataclass
class CVResult:
    ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray  # (repeats, n_patients) out-of-fold
    per_repeat: list[dict]
    fold_outputs: list = field(default_factory=list)  # (Fold, boosters, test table, cell scores) when kept

    @property
    def summary(self) -> dict:
        return summarise(self.per_repeat)


def cross_validate(cohort: Cohort, spec: FeatureSpec, params: dict, folds: list[Fold], keep_models=False,
                   on_fold: Callable[[int, Fold, np.ndarray], None] | None = None) -> CVResult:
    """Out-of-fold probabilities of every patient in every repeat. `on_fold(step, fold, probabilities)` is
    called after each fold, so a tuner can report progress and stop (prune) a hopeless trial early."""
    classifier = PatientClassifier(cohort, spec, params)
    held_out = {pid for fold in folds if fold.repeat == 0 for pid in fold.test_ids}
    ids = [pid for pid in cohort.labelled_ids if pid in held_out]
    position = {pid: i for i, pid in enumerate(ids)}
    repeats = max(f.repeat for f in folds) + 1
    probabilities = np.full((repeats, len(ids)), np.nan)
    outputs = []
    for step, fold in enumerate(folds):
        fold_probabilities, boosters, test_table, scores = classifier.fit_predict(fold.train_ids, fold.test_ids)
        probabilities[fold.repeat, [position[pid] for pid in fold.test_ids]] = fold_probabilities
        if keep_models:
            outputs.append((fold, boosters, test_table, scores))
        if on_fold:
            on_fold(step, fold, fold_probabilities)
    labels = cohort.labels(ids)
    per_repeat = [score(labels, probabilities[r]) for r in range(repeats)]
    return CVResult(ids, labels, probabilities, per_repeat, outputs)


def cv_report(cohort: Cohort, spec: FeatureSpec, params: dict, folds: int = 5, repeats: int = 10, seed: int = 0,
              keep_models: bool = False) -> tuple[dict, CVResult, CVResult]:
    """The `model.py cv` result: full model and clinical-only model on the same folds."""
    ids = cohort.labelled_ids
    fold_list = repeated_folds(ids, cohort.labels(ids), folds, repeats, seed)
    full = cross_validate(cohort, spec, params, fold_list, keep_models)
    clinical = cross_validate(cohort, spec.clinical_only(), params, fold_list)
    report = {
        "n_patients": len(ids),
        "n_tumoral": int(full.labels.sum()),
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        **full.summary,
        "clinical_only": clinical.summary,
        "oof": [
            {"id": pid, "label": int(label), "probability": float(np.mean(full.probabilities[:, i]))}
            for i, (pid, label) in enumerate(zip(ids, full.labels))
        ],
    }
    return report, full, clinical
