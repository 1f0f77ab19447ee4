"""Are the probabilities honest? Brier score, expected calibration error, reliability bins, and recalibration.

Training weighs both classes equally, so the raw probability of tumoral is pulled towards 0.5 whatever the
prevalence: good for ranking and for the balanced threshold, not to be read as a risk. A recalibration maps it
to a risk: Platt (a logistic curve of the log-odds) or isotonic (a non-decreasing step curve), fitted on
OUT-OF-FOLD probabilities of training patients, and kept only when a cross-validation over those
probabilities says it lowers the Brier score ("none" otherwise). The decision thresholds stay on the raw scale,
so recalibrating never changes who is sent to cytometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from ..errors import InputError
from ..metrics import Estimate, bootstrap_estimates
from .json_values import number_array

METHODS = ("none", "platt", "isotonic")
N_BINS = 10
EPSILON = 1e-6


def brier(labels, probabilities) -> float:
    return float(np.mean((np.asarray(probabilities, dtype=float) - np.asarray(labels)) ** 2))


def bin_of(probabilities) -> np.ndarray:
    """Equal-width bins of [0, 1]; 1.0 falls in the last."""
    return np.minimum((np.asarray(probabilities, dtype=float) * N_BINS).astype(int), N_BINS - 1)


def expected_calibration_error(labels, probabilities) -> float:
    """Sum over bins of (share of patients in the bin) x |mean probability - fraction tumoral|."""
    labels, probabilities = np.asarray(labels, dtype=float), np.asarray(probabilities, dtype=float)
    bins = bin_of(probabilities)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(probabilities[inside].mean() - labels[inside].mean())
    return float(total)


def reliability(labels, probabilities) -> list[dict]:
    """Per bin (every repeat's predictions pooled): its range, how many predictions fell in it per repeat, their
    mean probability and the fraction of them that were tumoral (None in an empty bin)."""
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))
    pooled, truth = probabilities.ravel(), np.tile(np.asarray(labels, dtype=float), len(probabilities))
    bins = bin_of(pooled)
    rows = []
    for b in range(N_BINS):
        inside = bins == b
        rows.append({"low": b / N_BINS, "high": (b + 1) / N_BINS, "count": float(inside.sum() / len(probabilities)),
                     "mean_probability": float(pooled[inside].mean()) if inside.any() else None,
                     "fraction_tumoral": float(truth[inside].mean()) if inside.any() else None})
    return rows


def logit(probabilities) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=float), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Recalibration:
    """`platt`: values (a, b), risk = 1 / (1 + exp(-(a logit(p) + b))); `isotonic`: knots x (increasing) and
    y (non-decreasing, in [0, 1]), linear between them, flat outside; `none`: the identity."""

    method: str = "none"
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def apply(self, probabilities) -> np.ndarray:
        p = np.asarray(probabilities, dtype=float)
        if self.method == "platt":
            (a, b) = self.x
            return 1.0 / (1.0 + np.exp(-(a * logit(p) + b)))
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return p.copy()

    @classmethod
    def fit(cls, method: str, labels, probabilities) -> Recalibration:
        labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=float)
        if method == "platt":
            fitted = LogisticRegression(C=1e6).fit(logit(probabilities)[:, None], labels)
            return cls("platt", (float(fitted.coef_[0, 0]), float(fitted.intercept_[0])))
        if method == "isotonic":
            fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probabilities, labels)
            return cls("isotonic", tuple(map(float, fitted.X_thresholds_)), tuple(map(float, fitted.y_thresholds_)))
        return cls()

    def to_dict(self) -> dict:
        return {"method": self.method, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data, what: str = "recalibration") -> Recalibration:
        """Read back from JSON, checked: a known method, finite values of the right shape and order."""
        if not isinstance(data, dict) or set(data) != {"method", "x", "y"} or data["method"] not in METHODS:
            raise InputError(f"{what} must be an object of method ({', '.join(METHODS)}), x and y")
        method = data["method"]
        x = number_array(data["x"], f"{what}.x", 1).tolist() if data["x"] != [] else []
        y = number_array(data["y"], f"{what}.y", 1).tolist() if data["y"] != [] else []
        if method == "none" and (x or y) or method == "platt" and (len(x) != 2 or y):
            raise InputError(f"{what}: {method} takes {'no values' if method == 'none' else 'x = [a, b] and no y'}")
        if method == "isotonic" and not (len(x) == len(y) >= 1 and np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
                                         and min(y) >= 0 and max(y) <= 1):
            raise InputError(f"{what}: isotonic knots must be increasing x and non-decreasing y in [0, 1]")
        return cls(method, tuple(x), tuple(y))


def choose_recalibration(labels, probabilities, folds: int = 5, seed: int = 0) -> tuple[Recalibration, dict]:
    """The method of lowest cross-validated Brier score over these (out-of-fold) probabilities, refitted on all
    of them; `none` unless another is strictly better. Returns it and each method's cross-validated Brier."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=float)
    folds = min(folds, int(np.bincount(labels, minlength=2).min()))
    if folds < 2:
        return Recalibration(), {}
    held_out = {method: np.empty(len(labels)) for method in METHODS}
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(probabilities, labels):
        for method in METHODS:
            fitted = Recalibration.fit(method, labels[train], probabilities[train])
            held_out[method][test] = fitted.apply(probabilities[test])
    scores = {method: brier(labels, values) for method, values in held_out.items()}
    best = min(METHODS, key=lambda m: (scores[m], METHODS.index(m)))
    return Recalibration.fit(best, labels, probabilities), scores


def judge_calibration(labels, probabilities, n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Brier score and ECE of (repeats x patients) held-out probabilities, averaged over repeats, with bootstrap
    intervals over patients."""
    labels = np.asarray(labels)
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))

    def statistics(index: np.ndarray) -> dict[str, float]:
        return {"brier": float(np.mean([brier(labels[index], p[index]) for p in probabilities])),
                "ece": float(np.mean([expected_calibration_error(labels[index], p[index]) for p in probabilities]))}

    return bootstrap_estimates(labels, statistics, n_boot, seed)
