"""The patient classifier: feature table -> LightGBM, with parameters sized for ~150 patients.

LightGBM's defaults (min_data_in_leaf=20, min_data_in_bin=3, 31 leaves) are for large data: with ~100
training patients they allow about 5 leaves in total. Here trees are small and regularised, every random
choice is seeded and `deterministic=True`. Classes are weighted to equal total weight, so a probability of
0.5 is the decision threshold that targets balanced accuracy (the challenge metric) rather than accuracy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import lightgbm as lgb

from .bag_features import FeatureBuilder, FeatureSpec
from .cohort import Cohort

DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_iterations": 150,
    "num_leaves": 4,
    "max_depth": 3,
    "min_data_in_leaf": 8,
    "min_data_in_bin": 1,
    "min_sum_hessian_in_leaf": 1e-3,
    "max_bin": 63,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "n_models": 5,  # seed ensemble: average of 5 boosters with different bagging seeds (steadier than one)
}
FIXED_PARAMS = {"deterministic": True, "force_col_wise": True, "num_threads": 1, "verbosity": -1, "seed": 0}
THRESHOLD = 0.5


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    n_pos, n_neg = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    return np.where(labels == 1, len(labels) / (2 * n_pos), len(labels) / (2 * n_neg))


def train_boosters(table: pd.DataFrame, labels: np.ndarray, params: dict) -> list[lgb.Booster]:
    params = {**DEFAULT_PARAMS, **params}
    n_models = int(params.pop("n_models"))
    boosters = []
    for k in range(n_models):
        run = {**params, **FIXED_PARAMS, "seed": FIXED_PARAMS["seed"] + k}
        data = lgb.Dataset(table.to_numpy(dtype=np.float64), label=labels, weight=balanced_weights(labels),
                           feature_name=[_lgb_name(c) for c in table.columns], free_raw_data=True,
                           params={"max_bin": run["max_bin"], "min_data_in_bin": run["min_data_in_bin"], "verbosity": -1})
        boosters.append(lgb.train(run, data))
    return boosters


def _lgb_name(column: str) -> str:
    """LightGBM refuses some characters in feature names; readable names stay in the feature table."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in column)


def predict_boosters(boosters: list[lgb.Booster], table: pd.DataFrame) -> np.ndarray:
    x = table.to_numpy(dtype=np.float64)
    return np.mean([b.predict(x) for b in boosters], axis=0)


class PatientClassifier:
    """Features (fitted on the training patients only) + LightGBM."""

    def __init__(self, cohort: Cohort, spec: FeatureSpec, params: dict):
        self.builder = FeatureBuilder(cohort, spec)
        self.cohort = cohort
        self.spec = spec
        self.params = params

    def fit(self, train_ids):
        """Boosters, fitted feature state and training feature table."""
        train_table, state, _ = self.builder.fit(train_ids)
        boosters = train_boosters(train_table, self.cohort.labels(train_ids), self.params)
        return boosters, state, train_table

    def fit_predict(self, train_ids, test_ids):
        """Fit on `train_ids` only; held-out probabilities, boosters, held-out table and cell scores."""
        if set(train_ids) & set(test_ids):
            raise ValueError("a patient is in both the training and the held-out set")
        boosters, state, _ = self.fit(train_ids)
        test_table, scores = self.builder.transform(test_ids, state)
        return predict_boosters(boosters, test_table), boosters, test_table, scores
