"""The challenge metric and how results are written: one decision threshold, one "mean ± std".

Training weighs both classes equally, so a probability of 0.5 is the threshold that targets balanced accuracy
(the challenge metric) rather than accuracy; every prediction, score and figure decides with `decide`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

THRESHOLD = 0.5
METRICS = ("balanced_accuracy", "roc_auc")


def plus_minus(mean: float, std: float, digits: int = 3, unit: str = "") -> str:
    """How every "mean ± spread" of the tool is written."""
    return f"{mean:.{digits}f}{unit} ± {std:.{digits}f}{unit}"


def decide(probabilities) -> np.ndarray:
    """1 (tumoral) where the probability reaches THRESHOLD, else 0 (reactive)."""
    return (np.asarray(probabilities) >= THRESHOLD).astype(int)


@dataclass(frozen=True)
class Scores:
    balanced_accuracy: float
    roc_auc: float  # NaN when only one class is present

    @classmethod
    def of(cls, labels, probabilities) -> Scores:
        labels = np.asarray(labels)
        return cls(
            balanced_accuracy=float(balanced_accuracy_score(labels, decide(probabilities))),
            roc_auc=float(roc_auc_score(labels, probabilities)) if len(set(labels.tolist())) == 2 else float("nan"),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Spread:
    """Mean and standard deviation of one metric over repeats."""

    mean: float
    std: float

    @classmethod
    def of(cls, values) -> Spread:
        values = np.asarray(list(values), dtype=float)
        return cls(float(np.mean(values)), float(np.std(values)))

    def __str__(self) -> str:
        return plus_minus(self.mean, self.std)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """Balanced accuracy and ROC AUC over repeats."""

    balanced_accuracy: Spread
    roc_auc: Spread

    @classmethod
    def of(cls, per_repeat: list[Scores]) -> Summary:
        return cls(*(Spread.of(getattr(s, metric) for s in per_repeat) for metric in METRICS))

    def to_dict(self) -> dict:
        return {metric: getattr(self, metric).to_dict() for metric in METRICS}


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.low:.3f}–{self.high:.3f}"


def _balanced_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per row of `probabilities` (repeats x patients)."""
    predicted = decide(probabilities).astype(bool)
    positive = labels == 1
    return 0.5 * (predicted[:, positive].mean(1) + (~predicted[:, ~positive]).mean(1))


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row, ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(probabilities, axis=1)
    positive = labels == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return (ranks[:, positive].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def class_resamples(labels, n_boot: int = 1000, seed: int = 0):
    """`n_boot` bootstrap samples of patient positions, drawn with replacement within each class (so both
    classes stay present in every sample, in their own numbers): every interval of the tool resamples this way."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in (0, 1)]
    for _ in range(n_boot):
        yield np.concatenate([rng.choice(members, len(members)) for members in classes])


def bootstrap_intervals(labels, probabilities, n_boot: int = 1000, seed: int = 0) -> dict[str, Interval]:
    """95% bootstrap intervals of the repeat-averaged balanced accuracy and AUC: patients resampled with
    replacement within each class (so both stay present), every repeat's out-of-fold predictions kept paired."""
    labels, probabilities = np.asarray(labels), np.atleast_2d(np.asarray(probabilities, dtype=float))
    values = {"balanced_accuracy": np.empty(n_boot), "roc_auc": np.empty(n_boot)}
    for b, index in enumerate(class_resamples(labels, n_boot, seed)):
        values["balanced_accuracy"][b] = _balanced_accuracy(labels[index], probabilities[:, index]).mean()
        values["roc_auc"][b] = _roc_auc(labels[index], probabilities[:, index]).mean()
    return {k: Interval(*np.percentile(v, [2.5, 97.5]).tolist()) for k, v in values.items()}


@dataclass(frozen=True)
class Estimate:
    """A number measured on the patients, with its 95% bootstrap interval over patients."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} ({self.low:.3f}–{self.high:.3f})"

    def percent(self) -> str:
        return f"{100 * self.value:.0f}% ({100 * self.low:.0f}–{100 * self.high:.0f}%)"

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_estimates(labels, statistics, n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """`statistics(index)` -> {name: value} on the patients at `index`: its value on every patient, with the
    2.5 and 97.5 percentiles over resamples drawn like `bootstrap_intervals` (within each class). A statistic
    undefined on a resample (NaN) is left out of that resample's percentiles."""
    labels = np.asarray(labels)
    point = statistics(np.arange(len(labels)))
    samples = {name: np.empty(n_boot) for name in point}
    for b, index in enumerate(class_resamples(labels, n_boot, seed)):
        for name, value in statistics(index).items():
            samples[name][b] = value
    result = {}
    for name, value in point.items():
        finite = samples[name][np.isfinite(samples[name])]
        low, high = np.percentile(finite, [2.5, 97.5]).tolist() if len(finite) else (float("nan"), float("nan"))
        result[name] = Estimate(float(value), float(low), float(high))
    return result
