"""What the report's pages are made from: importance tables and each patient's out-of-fold view."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..metrics import decide
from .thumbnails import CellGallery


@dataclass
class Importance:
    families: pd.DataFrame
    sources: pd.DataFrame
    backbones: pd.DataFrame
    features: pd.DataFrame
    n_fold_models: int

    @property
    def families_differ_from_features(self) -> bool:
        """Worth a chart of its own only when some family pools several features (embedding dimensions)."""
        return bool((self.families["n_features"] > 1).any())


@dataclass
class PatientView:
    patient_id: str
    label: int
    probability: float
    spread: float
    clinical_probability: float
    clinical: str  # "age 71 years, male, lymphocyte count 12.4 ×10⁹/L"
    n_cells: int
    base: float
    logit: float  # base + every feature's contribution
    up: list[tuple[str, float]]  # ("feature = value", contribution in log-odds)
    down: list[tuple[str, float]]
    cells: CellGallery | None
    median_cell_score: float | None = None

    @property
    def predicted(self) -> int:
        return int(decide(self.probability))

    @property
    def correct(self) -> bool:
        return self.predicted == self.label
