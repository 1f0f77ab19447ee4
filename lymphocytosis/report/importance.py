"""Feature importance from held-out SHAP values and gain: per feature, per family, per source, per backbone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..model.explanations import Explanations
from ..model.tables import FeatureColumn
from .naming import backbone_name, family_name, feature_family, readable_name, source_name


def several_backbones(ex: Explanations) -> bool:
    return len({c.backbone for c in ex.columns if c.backbone is not None}) > 1


def grouped_importance(ex: Explanations, key: Callable[[FeatureColumn], object],
                       name: Callable[[list[FeatureColumn]], str]) -> pd.DataFrame:
    """Mean |sum of a group's SHAP values| over held-out patients, per repeat; mean and std over repeats.

    Summing before the absolute value is what SHAP's additivity allows: the group's total push on one
    patient, so correlated features that share (or cancel) a push are not counted twice."""
    groups = list(dict.fromkeys(key(c) for c in ex.columns))
    members = {g: [c for c in ex.columns if key(c) == g] for g in groups}
    matrix = np.zeros((len(ex.columns), len(groups)))
    for i, column in enumerate(ex.columns):
        matrix[i, groups.index(key(column))] = 1.0
    per_repeat = np.nanmean(np.abs(ex.shap[:, :, :-1] @ matrix), axis=1)  # (repeats, groups)
    frame = pd.DataFrame({
        "name": [name(members[g]) for g in groups],
        "n_features": [len(members[g]) for g in groups],
        "mean_abs_shap": per_repeat.mean(0),
        "std": per_repeat.std(0),
    })
    return frame.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


def family_importance(ex: Explanations) -> pd.DataFrame:
    """SHAP by family: each clinical attribute, each cell-score statistic, each embedding statistic (all dims)."""
    several = several_backbones(ex)
    return grouped_importance(ex, feature_family, lambda m: family_name(m, several))


def source_importance(ex: Explanations) -> pd.DataFrame:
    """SHAP by source (clinical / cell score / embedding): how much the images weigh against the clinical
    attributes as a whole, which the per-statistic families split into many small bars."""
    return grouped_importance(ex, source_name, lambda m: source_name(m[0]))


def backbone_importance(ex: Explanations) -> pd.DataFrame:
    """SHAP by embeddings file (backbone), next to the clinical attributes as a whole."""
    return grouped_importance(ex, backbone_name, lambda m: backbone_name(m[0]))


def feature_importance(ex: Explanations) -> pd.DataFrame:
    """Per feature: mean |SHAP| (mean and std over repeats) and share of gain (mean and std over fold models)."""
    several = several_backbones(ex)
    per_repeat = np.nanmean(np.abs(ex.shap[:, :, :-1]), axis=1)
    return pd.DataFrame({
        "column": [c.key for c in ex.columns],
        "name": [readable_name(c, several) for c in ex.columns],
        "mean_abs_shap": per_repeat.mean(0),
        "shap_std": per_repeat.std(0),
        "gain_share": ex.gain_share.mean(0),
        "gain_std": ex.gain_share.std(0),
    })
