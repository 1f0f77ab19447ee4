"""Honest accuracy: repeated stratified K-fold over patients, every learned step refitted inside each fold.

A patient is never in both the training and the held-out part of a fold (checked, not assumed), and the
clinical-only model runs on the very same folds, so each result shows what the images add.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..errors import InputError
from ..metrics import Scores, Summary
from ..progress import Progress
from .classifier import FittedModel, Prediction
from .cohort import Cohort
from .feature_spec import FeatureSpec
from .features import prepare_statistics
from .threads import ordered_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    repeat: int
    fold: int
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


@dataclass(frozen=True)
class CVDesign:
    folds: int = 5
    repeats: int = 10
    seed: int = 0

    def to_dict(self) -> dict:
        return {"folds": self.folds, "repeats": self.repeats, "seed": self.seed}


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


def design_folds(cohort: Cohort, design: CVDesign, ids: list[str] | None = None) -> list[Fold]:
    ids = cohort.labelled_ids if ids is None else list(ids)
    return repeated_folds(ids, cohort.labels(ids), design.folds, design.repeats, design.seed)


@dataclass
class FoldResult:
    """One fold's held-out prediction (and, when kept, the model that made it)."""

    fold: Fold
    prediction: Prediction
    model: FittedModel | None = None


@dataclass
class CVResult:
    ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray  # (repeats, n_patients) out-of-fold
    folds: list[FoldResult] = field(default_factory=list)

    @property
    def per_repeat(self) -> list[Scores]:
        return [Scores.of(self.labels, p) for p in self.probabilities]

    @property
    def summary(self) -> Summary:
        return Summary.of(self.per_repeat)

    @property
    def mean_probability(self) -> np.ndarray:
        return self.probabilities.mean(0)


def fit_fold(cohort: Cohort, spec: FeatureSpec, params: dict, fold: Fold, keep_model: bool) -> FoldResult:
    if set(fold.train_ids) & set(fold.test_ids):
        raise ValueError("a patient is in both the training and the held-out set")
    model = FittedModel.fit(cohort, fold.train_ids, spec, params)
    return FoldResult(fold, model.predict_proba(cohort, fold.test_ids), model if keep_model else None)


def cross_validate(cohort: Cohort, spec: FeatureSpec, params: dict, folds: list[Fold], keep_models: bool = False,
                   on_fold: Callable[[int, FoldResult], None] | None = None, bar=None,
                   threads: int | None = None) -> CVResult:
    """Out-of-fold probabilities of every patient in every repeat. `on_fold(step, result)` is called after each
    fold, in fold order, so a tuner can report progress and stop (prune) a hopeless trial early.

    Up to `threads` folds are fitted at once (default: threads.fold_threads(), $LYMPHOCYTOSIS_THREADS or up to
    2); each fold's result depends on its own patients only, and results are used in fold order, so the result,
    the calls of `on_fold` and an exception raised by a fold or by `on_fold` are those of one fold after the
    other. Folds already started when `on_fold` stops the CV are finished and discarded: with `on_fold`, no fold
    starts before the one `threads` back is taken, so a stopped CV (a pruned trial) finishes only the folds
    already running; without it, one more may start, so that no thread idles while an earlier fold finishes."""
    held_out = {patient_id for fold in folds if fold.repeat == 0 for patient_id in fold.test_ids}
    ids = [patient_id for patient_id in cohort.labelled_ids if patient_id in held_out]
    position = {patient_id: i for i, patient_id in enumerate(ids)}
    probabilities = np.full((max(f.repeat for f in folds) + 1, len(ids)), np.nan)
    results = []
    prepare_statistics(cohort, spec, threads)
    with ordered_results(lambda fold: fit_fold(cohort, spec, params, fold, keep_models), folds, threads,
                         ahead=0 if on_fold else 1) as fitted:
        for step, result in enumerate(fitted):
            fold = result.fold
            probabilities[fold.repeat, [position[patient_id] for patient_id in fold.test_ids]] = result.prediction.probabilities
            results.append(result)
            if on_fold:
                on_fold(step, result)
            if bar is not None:
                bar.update(1)
    return CVResult(ids, cohort.labels(ids), probabilities, results)


@dataclass
class Comparison:
    """`model.py cv`: the full model and the clinical-only model on the same folds."""

    design: CVDesign
    full: CVResult
    clinical: CVResult

    @property
    def n_tumoral(self) -> int:
        return int(self.full.labels.sum())

    def summary_dict(self) -> dict:
        """The headline numbers as JSON (the `cv --json` document)."""
        return {
            "n_patients": len(self.full.ids),
            "n_tumoral": self.n_tumoral,
            **self.design.to_dict(),
            **self.full.summary.to_dict(),
            "clinical_only": self.clinical.summary.to_dict(),
            "oof": [{"id": patient_id, "label": int(label), "probability": float(p)}
                    for patient_id, label, p in zip(self.full.ids, self.full.labels, self.full.mean_probability)],
        }


def compare(cohort: Cohort, spec: FeatureSpec, params: dict, design: CVDesign, keep_models: bool = False,
            progress: Progress = Progress()) -> Comparison:
    folds = design_folds(cohort, design)
    with progress.bar(total=2 * len(folds), desc="cross-validation", unit="fold") as bar:
        full = cross_validate(cohort, spec, params, folds, keep_models, bar=bar)
        clinical = cross_validate(cohort, spec.clinical_only(), params, folds, bar=bar)
    return Comparison(design, full, clinical)
