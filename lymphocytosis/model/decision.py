"""From probabilities to decisions, learned on training patients only: thresholds and recalibration.

A model's probabilities of its own training patients are too confident to choose a threshold or a
recalibration with, so both come from an inner cross-validation over the training patients (`INNER_FOLDS`
folds; the boosters refitted in each, on the training patients' cross-fitted features: inner_out_of_fold):
its out-of-fold probabilities set the sensitivity thresholds (operating_points.py) and choose and fit the
recalibration (calibration.py).

`fit` does this on every labelled patient and saves the rule with the model. `cv` does it inside each outer
training fold, then judges the rule on the held-out fold, which it never saw: so the CV measures the whole
procedure that `fit` runs, thresholds included.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..progress import Progress
from .calibration import Recalibration, choose_recalibration
from .classifier import predict_with, train_boosters
from .cohort import Cohort
from .evaluation import Fold, repeated_folds
from .feature_spec import FeatureSpec
from .features import fit_features
from .json_values import finite_number, integer
from .operating_points import DEFAULT_SENSITIVITIES, OperatingPoints
from .params import validate_params
from .tables import FeatureTable
from .threads import ordered_results

INNER_FOLDS = 5
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DecisionRule:
    """What turns a model's probability into a decision (operating points) and a risk (recalibration)."""

    operating_points: OperatingPoints
    recalibration: Recalibration
    recalibration_brier: dict  # cross-validated Brier score of each recalibration method (how it was chosen)
    inner_folds: int = INNER_FOLDS

    @classmethod
    def default(cls) -> DecisionRule:
        """The rule of a model saved without one: the balanced threshold, no recalibration."""
        return cls(OperatingPoints.balanced_only(), Recalibration(), {}, 0)

    @property
    def recalibrated(self) -> bool:
        return self.recalibration.method != "none"

    def to_dict(self) -> dict:
        return {"operating_points": self.operating_points.to_list(), "recalibration": self.recalibration.to_dict(),
                "recalibration_brier": self.recalibration_brier, "inner_folds": self.inner_folds}

    @classmethod
    def from_dict(cls, data, what: str = "decision") -> DecisionRule:
        """Read back from JSON, every value checked; an InputError names `what` and the key."""
        keys = {"operating_points", "recalibration", "recalibration_brier", "inner_folds"}
        if not isinstance(data, dict) or set(data) != keys:
            raise InputError(f"{what} must be an object of {', '.join(sorted(keys))}")
        brier = data["recalibration_brier"]
        if not isinstance(brier, dict) or not set(brier) <= {"none", "platt", "isotonic"}:
            raise InputError(f"{what}.recalibration_brier must map recalibration methods to Brier scores")
        return cls(OperatingPoints.from_list(data["operating_points"], f"{what}.operating_points"),
                   Recalibration.from_dict(data["recalibration"], f"{what}.recalibration"),
                   {k: finite_number(v, f"{what}.recalibration_brier.{k}") for k, v in brier.items()},
                   integer(data["inner_folds"], f"{what}.inner_folds", 0, 100))


def inner_out_of_fold(cohort: Cohort, spec: FeatureSpec, params: dict, train_ids, seed: int,
                      inner_folds: int = INNER_FOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Labels and out-of-fold probabilities of `train_ids`, from boosters fitted on `train_ids` only.

    Cheap by design: the feature table is the one fitting on `train_ids` builds (fit_features, memoised, so the
    model fit of the same patients already paid for it), whose cell scores are cross-fitted (each patient's
    cells scored by a ridge that never saw him); only the boosters are refitted per inner fold. A patient's
    out-of-fold probability thus comes from boosters that never saw him, on features learned without his cells;
    the other training patients' cell scores were learned with him among others (a second-order effect the
    full refit would remove at six times the cost). Patients outside `train_ids` play no part."""
    train_ids = list(train_ids)
    labels = cohort.labels(train_ids)
    inner_folds = min(inner_folds, int(np.bincount(labels, minlength=2).min()))
    if inner_folds < 2:
        raise InputError(f"{len(train_ids)} training patients: too few of one class for an inner cross-validation "
                         "to choose thresholds with")
    params = validate_params(params, "parameters")
    _, table = fit_features(cohort, spec, train_ids)
    position = {patient_id: i for i, patient_id in enumerate(table.ids)}
    probabilities = np.full(len(train_ids), np.nan)
    for fold in repeated_folds(train_ids, labels, inner_folds, 1, seed):
        fit_rows = [position[p] for p in fold.train_ids]
        test_rows = [position[p] for p in fold.test_ids]
        subset = FeatureTable(list(fold.train_ids), table.columns, table.values[fit_rows])
        boosters = train_boosters(subset, labels[fit_rows], params)
        probabilities[test_rows] = np.mean([predict_with(b, table.values[test_rows]) for b in boosters], axis=0)
    return labels, probabilities


def learn_rule(cohort: Cohort, spec: FeatureSpec, params: dict, train_ids, sensitivities=DEFAULT_SENSITIVITIES,
               seed: int = 0, inner_folds: int = INNER_FOLDS) -> DecisionRule:
    """The decision rule of a model trained on `train_ids`, learned from `train_ids` alone."""
    labels, out_of_fold = inner_out_of_fold(cohort, spec, params, train_ids, seed, inner_folds)
    recalibration, scores = choose_recalibration(labels, out_of_fold, seed=seed)
    return DecisionRule(OperatingPoints.choose(labels, out_of_fold, sensitivities), recalibration, scores, inner_folds)


@dataclass(frozen=True)
class FoldRule:
    fold: Fold
    rule: DecisionRule


def fold_seed(seed: int, fold: Fold) -> int:
    return seed + 1000 * fold.repeat + fold.fold


def learn_fold_rules(cohort: Cohort, spec: FeatureSpec, params: dict, folds: list[Fold], seed: int,
                     sensitivities=DEFAULT_SENSITIVITIES, inner_folds: int = INNER_FOLDS,
                     progress: Progress = Progress()) -> list[FoldRule]:
    """One rule per outer fold, each learned from that fold's training patients only; folds in threads like
    cross_validate's (threads.py), the rules and a fold's error as one fold after the other gives them."""
    rules = []

    def learn(fold: Fold) -> FoldRule:
        return FoldRule(fold, learn_rule(cohort, spec, params, fold.train_ids, sensitivities, fold_seed(seed, fold),
                                         inner_folds))

    with progress.bar(total=len(folds), desc="thresholds (inner CV)", unit="fold") as bar, \
            ordered_results(learn, folds) as learned:
        for rule in learned:
            rules.append(rule)
            bar.update(1)
    return rules


DECISION_KEY = "decision"  # model.json's key for a SavedDecision (absent in models saved before it existed)


def cells_fingerprint(cohort: Cohort, patient_id: str) -> str:
    """SHA-256 of a patient's cell embeddings (first embeddings file): the same images embedded with the same
    settings give the same bytes, whatever the patient is called; "" for a patient without cells."""
    bag = np.ascontiguousarray(cohort.primary.bags[patient_id], dtype=np.float32)
    return hashlib.sha256(bag.tobytes()).hexdigest() if bag.size else ""


@dataclass(frozen=True)
class SavedDecision:
    """What `fit` saves with a model besides its boosters: its decision rule, and who it was trained on (IDs and
    cell fingerprints), so that `evaluate` refuses to judge it on its own training patients."""

    rule: DecisionRule
    training_patients: dict[str, str]  # ID -> cells_fingerprint

    @classmethod
    def of(cls, cohort: Cohort, train_ids, rule: DecisionRule) -> SavedDecision:
        return cls(rule, {patient_id: cells_fingerprint(cohort, patient_id) for patient_id in train_ids})

    def to_dict(self) -> dict:
        return {"rule": self.rule.to_dict(), "training_patients": self.training_patients}

    @classmethod
    def from_dict(cls, data, what: str = DECISION_KEY) -> SavedDecision:
        if not isinstance(data, dict) or set(data) != {"rule", "training_patients"}:
            raise InputError(f"{what} must be an object of rule and training_patients")
        patients = data["training_patients"]
        if not (isinstance(patients, dict) and patients
                and all(isinstance(v, str) and (v == "" or HEX64.match(v)) for v in patients.values())):
            raise InputError(f"{what}.training_patients must map each training patient's ID to a SHA-256 (or \"\")")
        return cls(DecisionRule.from_dict(data["rule"], f"{what}.rule"), dict(patients))
