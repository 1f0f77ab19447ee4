"""Which patient-level features a model uses: a small frozen record, saved with every model and study.

Two kinds of image features, both optional:
- statistics (mean, max, quantiles, ...) of every embedding dimension, optionally after a PCA fitted on the
  training cells -- bag statistics taken literally; with ~1280 dimensions and ~100 training patients these
  drown the clinical columns, so they are off by default;
- statistics of a learned per-cell score (see cell_score.py), which carry the images' signal in a handful of
  columns. This is the default.
With several embeddings files, each file gets its own columns of each kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import InputError
from .statistics import nan_statistic_function, statistic_function

CLINICAL_CHOICES = ("age", "sex_male", "lymph_count", "log_lymph_count", "bag_size")
LIST_FIELDS = ("clinical", "embedding_stats", "cell_score_stats", "measurement_stats")
INT_RANGES = {"embedding_pca": (0, 256), "inner_folds": (2, 50), "seed": (0, 2**31 - 1)}


@dataclass(frozen=True)
class FeatureSpec:
    clinical: tuple[str, ...] = ("age", "sex_male", "lymph_count")
    embedding_stats: tuple[str, ...] = ()  # e.g. ("mean", "max", "q25", "q75")
    embedding_pca: int = 0  # 0: raw dimensions; k: the first k principal components of training cells
    cell_score: bool = True
    # Defaults chosen by 10x5-fold CV on the 120 development patients (README, "Accuracy"): three statistics
    # beat eight (fewer noisy columns for ~100 training patients); alpha 0.1 beat 0.03 and 1.
    cell_score_stats: tuple[str, ...] = ("mean", "q50", "q90")
    cell_score_alpha: float = 0.1  # ridge penalty on standardised embeddings
    # Weight of the invariance penalty (cell_score.Views): a cell's score should not change between the cell and
    # its training view (augmentation.py). Used when the embeddings have their views beside them (extract.py
    # makes them); 0: off. Chosen by the site-shift benchmark (docs/site-shift.md).
    cell_score_invariance: float = 1.0
    inner_folds: int = 5  # cross-fitting of training patients' cell scores
    seed: int = 0
    # Measurement files (morphometry, colour; see measurements.py): statistics of each named quantity, and/or a
    # cell score on the measurement vector (with cell_score_stats and cell_score_alpha). Off by default.
    measurement_stats: tuple[str, ...] = ()  # e.g. ("q50",): NaN-aware mean, std, min, max, qNN
    measurement_score: bool = False

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        if not isinstance(data, dict):
            raise InputError(f"feature specification: expected an object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"feature specification: unknown key(s) {', '.join(sorted(unknown))}")
        values = {}
        for key, value in data.items():
            if key in LIST_FIELDS:
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise InputError(f"feature specification: {key} must be a list of names, not {value!r}")
                value = tuple(value)
            values[key] = value
        spec = cls(**values)
        spec.validate()
        return spec

    @property
    def uses_images(self) -> bool:
        """Does any column come from the cells (embeddings, cell scores or measured quantities)?"""
        return bool(self.embedding_stats or self.cell_score or self.measurement_stats or self.measurement_score)

    def clinical_only(self) -> FeatureSpec:
        return FeatureSpec(clinical=tuple(c for c in self.clinical if c != "bag_size"), embedding_stats=(),
                           cell_score=False, seed=self.seed)

    def validate(self) -> None:
        """Types and ranges of every field; one line naming the first that is wrong."""
        for name in LIST_FIELDS:
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(set(values)) != len(values):
                raise InputError(f"feature specification: {name} must be names without repeats, not {values!r}")
        for name in self.clinical:
            if name not in CLINICAL_CHOICES:
                raise InputError(f"feature specification: unknown clinical feature {name!r} ({', '.join(CLINICAL_CHOICES)})")
        for name in (*self.embedding_stats, *self.cell_score_stats):
            statistic_function(name)
        for name in self.measurement_stats:
            nan_statistic_function(name)
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise InputError(f"feature specification: {name} must be an integer from {low} to {high}, not {value!r}")
        alpha = self.cell_score_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 1e-6 <= alpha <= 1e6:
            raise InputError(f"feature specification: cell_score_alpha must be a number from 1e-6 to 1e6, not {alpha!r}")
        weight = self.cell_score_invariance
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1e4:
            raise InputError(f"feature specification: cell_score_invariance must be a number from 0 to 1e4, not {weight!r}")
        for name in ("cell_score", "measurement_score"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"feature specification: {name} must be true or false, not {getattr(self, name)!r}")
        if self.cell_score and not self.cell_score_stats:
            raise InputError("feature specification: cell_score is on but cell_score_stats is empty")
        if not (self.clinical or self.embedding_stats or self.cell_score):
            raise InputError("feature specification: no feature at all")
