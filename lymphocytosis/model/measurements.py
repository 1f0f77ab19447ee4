"""Measurement sets in stage 2: files of named per-cell quantities (`extract.py --measure morphometry|colour`).

A measurement file is loaded as one more feature set of the cohort, like an embeddings file; what sets it apart
is its `dimension_names`. Its features, each switched on in `FeatureSpec`:
- `measurement_stats`: per-patient statistics of every named quantity ("median nucleus area"), over the cells
  whose nucleus was found (a cell where segmentation failed is NaN and ignored, not zero);
- `measurement_score`: the cross-fitted per-cell ridge score of cell_score.py on the standardised measurement
  vector (cells with any missing quantity left out of the fit and the statistics).
Embedding-only options (`embedding_stats`, `cell_score`) never apply to measurement sets, nor these to
embeddings files.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from ..errors import InputError
from .cell_score import CellScoreWeights, CellStatistics
from .cohort import CellFeatureSet, Cohort
from .cross_fit import cross_fitted_scores
from .feature_spec import FeatureSpec
from .statistics import bag_statistics, nan_statistic_function
from .tables import CELL_SCORE, MEASUREMENT, FeatureColumn, FeatureTable
from .tuned_params import Settings

# The morphometry configuration measured best with the default pipeline (README, "Accuracy"): each quantity's
# per-patient median -- robust to the odd mis-segmented cell, and one column per quantity.
MORPHOMETRY_STATS = ("q50",)


def with_morphometry(spec: FeatureSpec) -> FeatureSpec:
    """`spec` with the measurement files' features switched on as recommended."""
    return replace(spec, measurement_stats=MORPHOMETRY_STATS)


def settings_for(cohort: Cohort, settings: Settings) -> Settings:
    """The defaults use a cohort's measurement files when it has any (given files are meant to be used);
    tuned settings are kept as tuned (tune.py searched the measurement features itself)."""
    if settings.tuned or not any(s.measured for s in cohort.sets) or settings.spec.measurement_stats:
        return settings
    return replace(settings, spec=with_morphometry(settings.spec))


def dimension_names(feature_set: CellFeatureSet) -> list[str]:
    try:
        names = json.loads(feature_set.provenance["dimension_names"])
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"{feature_set.path}: unreadable dimension_names attribute ({exc}); re-measure it") from None
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)):
        raise InputError(f"{feature_set.path}: dimension_names must be a list of distinct names, not {names!r:.80}; "
                         "re-measure it")
    if len(names) != feature_set.dim:
        raise InputError(f"{feature_set.path}: {len(names)} dimension names for {feature_set.dim} columns; re-measure it")
    return names


def stats_table(feature_set: CellFeatureSet, spec: FeatureSpec, ids: list[str]) -> FeatureTable:
    """Statistics of each named quantity per patient: learn nothing from labels, so computed once per process."""
    names, stats = dimension_names(feature_set), spec.measurement_stats

    def compute(bag: np.ndarray) -> np.ndarray:
        return bag_statistics(bag, stats, len(names), nan_statistic_function)

    rows = [feature_set.raw_statistics(patient_id, ("nan",) + stats, compute) for patient_id in ids]
    columns = [FeatureColumn(MEASUREMENT, attribute=name, backbone=feature_set.name, statistic=s)
               for s in stats for name in names]
    return FeatureTable(ids, columns, np.vstack(rows) if rows else np.zeros((0, len(columns))))


def complete_cells(feature_set: CellFeatureSet, patient_id: str) -> np.ndarray:
    """Which cells of the patient have every quantity (bool per cell)."""
    return np.isfinite(feature_set.bags[patient_id]).all(axis=1)


def complete_bags(feature_set: CellFeatureSet, ids: list[str]) -> dict[str, np.ndarray]:
    return {patient_id: feature_set.bags[patient_id][complete_cells(feature_set, patient_id)] for patient_id in ids}


def measurement_score_table(feature_set: CellFeatureSet, spec: FeatureSpec, ids: list[str], weights: CellScoreWeights | None,
                scores: dict[str, np.ndarray] | None = None) -> FeatureTable:
    """Cell-score statistics over the complete cells; the per-cell scores kept in image order (NaN where a
    quantity is missing), so they line up with the file names like an embeddings file's."""
    columns = [FeatureColumn(CELL_SCORE, backbone=feature_set.name, statistic=s) for s in spec.cell_score_stats]
    values, per_cell = [], {}
    for patient_id in ids:
        keep = complete_cells(feature_set, patient_id)
        score = scores[patient_id] if scores is not None else weights.score(feature_set.bags[patient_id][keep])
        full = np.full(len(keep), np.nan)
        full[keep] = score
        per_cell[patient_id] = full
        values.append(bag_statistics(score[:, None], spec.cell_score_stats, 1))  # complete cells only: no NaN
    return FeatureTable(ids, columns, np.array(values, dtype=np.float64).reshape(len(ids), len(columns)),
                        {feature_set.name: per_cell})


def fit_measurement_features(cohort: Cohort, feature_set: CellFeatureSet, spec: FeatureSpec, train_ids: list[str],
                             weights_out: dict[str, CellScoreWeights]) -> list[FeatureTable]:
    """One measurement file's columns for its training patients; a fitted score's weights go to `weights_out`."""
    parts = []
    if spec.measurement_stats:
        parts.append(stats_table(feature_set, spec, train_ids))
    if spec.measurement_score:
        labelled = cohort.labelled_ids
        statistics = cohort.memo.get(("measurement_statistics", feature_set.name),
                                     lambda: CellStatistics(complete_bags(feature_set, labelled)))
        cross_fit = cohort.memo.get(
            ("measurement_score", feature_set.name, tuple(train_ids), spec.seed, spec.cell_score_alpha, spec.inner_folds),
            lambda: cross_fitted_scores(statistics, complete_bags(feature_set, train_ids), train_ids,
                                        cohort.labels(train_ids), spec.cell_score_alpha, spec.inner_folds, spec.seed))
        weights_out[feature_set.name] = cross_fit.weights
        parts.append(measurement_score_table(feature_set, spec, train_ids, None, cross_fit.scores))
    return parts


def measurement_features(feature_set: CellFeatureSet, spec: FeatureSpec, ids: list[str],
                         weights: dict[str, CellScoreWeights]) -> list[FeatureTable]:
    """The same columns for patients the fit never saw."""
    parts = []
    if spec.measurement_stats:
        parts.append(stats_table(feature_set, spec, ids))
    if spec.measurement_score:
        parts.append(measurement_score_table(feature_set, spec, ids, weights[feature_set.name]))
    return parts
