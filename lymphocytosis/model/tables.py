"""The patient-level feature table's building blocks: what a column is (`FeatureColumn`), a table of some
patients' values (`FeatureTable`), and the cell-score columns shared by embeddings and measurements.

Kept apart from `features` (which fits them) so `measurements` can build on them without importing `features`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .feature_spec import FeatureSpec
from .statistics import bag_statistics

CLINICAL, EMBEDDING, CELL_SCORE = "clinical", "embedding", "cell_score"
MEASUREMENT = "measurement"  # a statistic of one named quantity of a measurement file (measurements.py)
FAMILIES = (CLINICAL, EMBEDDING, CELL_SCORE, MEASUREMENT)


@dataclass(frozen=True)
class FeatureColumn:
    family: str  # CLINICAL, EMBEDDING, CELL_SCORE or MEASUREMENT
    attribute: str | None = None  # clinical attribute ("age", "sex_male", ...) or measured quantity ("nc_ratio", ...)
    backbone: str | None = None  # the embeddings file (feature set) an image feature comes from
    statistic: str | None = None  # bag statistic ("mean", "q90", ...)
    basis: str | None = None  # embedding statistics: "dim" (raw dimension) or "pc" (principal component)
    index: int | None = None  # which dimension or component

    @property
    def key(self) -> str:
        """A unique name for tables and LightGBM; never parsed back."""
        if self.family == CLINICAL:
            return f"clinical:{self.attribute}"
        key = f"{self.family}[{self.backbone}]:{self.statistic}"
        if self.attribute is not None:  # a measured quantity
            key = f"{key}[{self.attribute}]"
        return key if self.basis is None else f"{key}[{self.basis}{self.index}]"

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureColumn:
        column = cls(**data)
        text = (column.attribute, column.backbone, column.statistic, column.basis)
        if column.family not in FAMILIES or not all(v is None or isinstance(v, str) for v in text) or not (
                column.index is None or type(column.index) is int):
            raise ValueError(f"not a feature column: {data!r}")
        return column


@dataclass
class FeatureTable:
    """Feature values of some patients, and the per-cell scores behind the cell-score columns."""

    ids: list[str]
    columns: list[FeatureColumn]
    values: np.ndarray  # (len(ids), len(columns)) float64
    cell_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # backbone -> patient -> per cell

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=pd.Index(self.ids, name="ID"), columns=[c.key for c in self.columns])

    @classmethod
    def join(cls, ids: list[str], parts: list[FeatureTable]) -> FeatureTable:
        scores = {name: s for part in parts for name, s in part.cell_scores.items()}
        columns = [c for part in parts for c in part.columns]
        values = np.hstack([part.values for part in parts]) if parts else np.zeros((len(ids), 0))
        return cls(list(ids), columns, values, scores)


def cell_score_table(name: str, spec: FeatureSpec, ids: list[str], scores: dict[str, np.ndarray]) -> FeatureTable:
    columns = [FeatureColumn(CELL_SCORE, backbone=name, statistic=s) for s in spec.cell_score_stats]
    values = np.vstack([bag_statistics(scores[patient_id][:, None], spec.cell_score_stats, 1) for patient_id in ids])
    return FeatureTable(ids, columns, values, {name: {patient_id: scores[patient_id] for patient_id in ids}})
