"""Operating points: the probability above which a patient is sent to flow cytometry.

`balanced` is the threshold training targets (metrics.THRESHOLD: both classes weigh the same). `sensNN` is the
highest threshold at which at least NN% of the tumoral patients reach it, on OUT-OF-FOLD probabilities of the
training patients (an inner cross-validation, decision.py): a model's own probabilities of the patients it
was trained on are too confident to set a threshold with. A patient is called tumoral when his probability
reaches the threshold; every other patient is spared cytometry.

Judged on patients the thresholds never saw: sensitivity, specificity (the fraction of reactive patients
spared cytometry), the fraction of all patients sent to cytometry, and PPV / NPV at a prevalence, each with a
95% bootstrap interval over patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics import THRESHOLD, Estimate, bootstrap_estimates
from .json_values import finite_number

BALANCED = "balanced"
DEFAULT_SENSITIVITIES = (0.95, 0.98)


def point_name(sensitivity: float) -> str:
    """0.95 -> sens95, 0.975 -> sens97.5."""
    return f"sens{round(sensitivity * 100, 6):g}"


def check_sensitivities(values) -> tuple[float, ...]:
    """Target sensitivities: distinct numbers above 0.5 and at most 1, in increasing order."""
    values = tuple(sorted(float(v) for v in values))
    if not all(0.5 < v <= 1.0 for v in values):
        raise InputError(f"target sensitivities must be above 0.5 and at most 1, not {', '.join(map(str, values))}")
    if len({point_name(v) for v in values}) != len(values):
        raise InputError("target sensitivities must be distinct")
    return values


def threshold_for_sensitivity(labels, probabilities, sensitivity: float) -> float:
    """The highest threshold that at least `sensitivity` of the tumoral patients reach (ties count as reached):
    k = floor(n (1 - s)) tumoral patients may fall below it, so it is the (k+1)-th lowest tumoral probability."""
    positive = np.sort(np.asarray(probabilities, dtype=float)[np.asarray(labels) == 1])
    if len(positive) == 0:
        raise InputError("no tumoral patient to set a sensitivity threshold with")
    allowed_misses = int(np.floor(len(positive) * (1.0 - sensitivity) + 1e-9))
    return float(positive[min(allowed_misses, len(positive) - 1)])


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float
    target: float | None = None  # the sensitivity it was chosen for; None for `balanced`

    def to_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "target": self.target}


@dataclass(frozen=True)
class OperatingPoints:
    """The thresholds of one model, `balanced` first."""

    points: tuple[OperatingPoint, ...]

    @classmethod
    def choose(cls, labels, out_of_fold, sensitivities=DEFAULT_SENSITIVITIES) -> OperatingPoints:
        """Each target's threshold, never above the balanced one: a point asked for to miss fewer leukaemias must
        never send fewer patients to cytometry than the default (it would, where every training tumoral patient
        scored above 0.5)."""
        chosen = [OperatingPoint(point_name(s), min(threshold_for_sensitivity(labels, out_of_fold, s), THRESHOLD), s)
                  for s in check_sensitivities(sensitivities)]
        return cls((OperatingPoint(BALANCED, THRESHOLD), *chosen))

    @classmethod
    def balanced_only(cls) -> OperatingPoints:
        return cls((OperatingPoint(BALANCED, THRESHOLD),))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.points]

    def threshold(self, name: str) -> float:
        for point in self.points:
            if point.name == name:
                return point.threshold
        raise InputError(f"no operating point {name!r} in this model (it has: {', '.join(self.names)})")

    def to_list(self) -> list[dict]:
        return [p.to_dict() for p in self.points]

    @classmethod
    def from_list(cls, data, what: str = "operating_points") -> OperatingPoints:
        """Read back from JSON: `balanced` first at metrics.THRESHOLD, then named targets in (0.5, 1] with
        thresholds in [0, 1]; an InputError names `what` otherwise."""
        if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
            raise InputError(f"{what} must be a non-empty list of objects")
        points = []
        for k, entry in enumerate(data):
            if set(entry) != {"name", "threshold", "target"}:
                raise InputError(f"{what}[{k}] must hold name, threshold and target")
            threshold = finite_number(entry["threshold"], f"{what}[{k}].threshold")
            target = None if entry["target"] is None else finite_number(entry["target"], f"{what}[{k}].target")
            expected = BALANCED if target is None else point_name(check_sensitivities([target])[0])
            if entry["name"] != expected or not 0.0 <= threshold <= 1.0:
                raise InputError(f"{what}[{k}]: {entry['name']!r:.40} with threshold {threshold} and target {target} "
                                 "is no operating point of this tool")
            points.append(OperatingPoint(expected, threshold, target))
        if points[0] != OperatingPoint(BALANCED, THRESHOLD) or len({p.name for p in points}) != len(points):
            raise InputError(f"{what} must start with balanced at {THRESHOLD} and name each point once")
        return cls(tuple(points))


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """PPV and NPV at a prevalence (Bayes' rule); NaN where nobody is called tumoral (or reactive)."""
    called_tumoral = sensitivity * prevalence + (1 - specificity) * (1 - prevalence)
    called_reactive = specificity * (1 - prevalence) + (1 - sensitivity) * prevalence
    ppv = sensitivity * prevalence / called_tumoral if called_tumoral > 0 else float("nan")
    npv = specificity * (1 - prevalence) / called_reactive if called_reactive > 0 else float("nan")
    return ppv, npv


def judge(labels, probabilities, thresholds, prevalence: float | None = None, n_boot: int = 1000,
          seed: int = 0) -> dict[str, Estimate]:
    """One operating point on held-out patients: `probabilities` and `thresholds` (repeats x patients: each
    patient decided with the threshold of the fold that held him out), averaged over repeats, with bootstrap
    intervals over patients. PPV/NPV at the cohort's own prevalence, and at `prevalence` when given."""
    labels = np.asarray(labels)
    called = np.atleast_2d(probabilities) >= np.atleast_2d(thresholds)
    cohort_prevalence = float(labels.mean())

    def statistics(index: np.ndarray) -> dict[str, float]:
        sample, decided = labels[index] == 1, called[:, index]
        sensitivity = float(decided[:, sample].mean(1).mean())
        specificity = float((~decided[:, ~sample]).mean(1).mean())
        values = {"sensitivity": sensitivity, "specificity": specificity, "sent_to_cytometry": float(decided.mean())}
        values["ppv"], values["npv"] = predictive_values(sensitivity, specificity, cohort_prevalence)
        if prevalence is not None:
            values["ppv_at_prevalence"], values["npv_at_prevalence"] = predictive_values(sensitivity, specificity,
                                                                                         prevalence)
        return values

    return bootstrap_estimates(labels, statistics, n_boot, seed)
