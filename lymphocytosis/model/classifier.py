"""The patient classifier: learned features + a small seed ensemble of LightGBM boosters, sized for ~150 patients.

Trees are small and regularised (params.py), every random choice is seeded and `deterministic=True`. Classes
are weighted to equal total weight, so the decision threshold of `metrics.decide` targets balanced accuracy
(the challenge metric) rather than accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np

from ..errors import InputError
from ..metrics import decide
from .cohort import Cohort
from .feature_spec import FeatureSpec
from .features import FittedFeatures, fit_features
from .params import DEFAULT_PARAMS, FIXED_PARAMS, validate_params
from .tables import FeatureColumn, FeatureTable


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    n_pos, n_neg = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    return np.where(labels == 1, len(labels) / (2 * n_pos), len(labels) / (2 * n_neg))


def lightgbm_name(column: FeatureColumn) -> str:
    """LightGBM refuses some characters in feature names; readable names stay in the feature table."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in column.key)


def train_boosters(table: FeatureTable, labels: np.ndarray, params: dict) -> list[lgb.Booster]:
    """The seed ensemble. One binned `Dataset` serves every seed (binning does not depend on the seed: the
    boosters are byte-identical to those of a Dataset per seed), and each booster is kept as trained rather than
    round-tripped through its model string (LightGBM's default, which frees the training data: a few kB here)."""
    params = {**DEFAULT_PARAMS, **params}
    n_models = int(params.pop("n_models"))
    data = lgb.Dataset(table.values, label=labels, weight=balanced_weights(labels),
                       feature_name=[lightgbm_name(c) for c in table.columns], free_raw_data=True,
                       params={"max_bin": params["max_bin"], "min_data_in_bin": params["min_data_in_bin"],
                               "num_threads": FIXED_PARAMS["num_threads"], "verbosity": -1})
    return [lgb.train({**params, **FIXED_PARAMS, "seed": FIXED_PARAMS["seed"] + k}, data, keep_training_booster=True)
            for k in range(n_models)]


def predict_with(booster: lgb.Booster, values: np.ndarray, **options) -> np.ndarray:
    """A booster's prediction on one thread, like its training: LightGBM otherwise opens an OpenMP team per call,
    which on tens of rows costs 100x the prediction itself (measured: 17 ms against 0.17 ms), with identical
    results (every row is predicted on its own)."""
    return booster.predict(values, num_threads=FIXED_PARAMS["num_threads"], **options)


@dataclass
class Prediction:
    """Probabilities of tumoral for `table.ids`, and the features they came from."""

    table: FeatureTable
    probabilities: np.ndarray

    @property
    def ids(self) -> list[str]:
        return self.table.ids

    @property
    def labels(self) -> np.ndarray:
        return decide(self.probabilities)


@dataclass
class FittedModel:
    """Learned features + boosters: everything needed to predict a new patient, and to save or explain it."""

    spec: FeatureSpec
    params: dict
    features: FittedFeatures
    columns: list[FeatureColumn]
    boosters: list[lgb.Booster]
    provenance: dict[str, dict]  # embeddings identity per feature set, as in Cohort.provenance
    training: dict = field(default_factory=dict)  # who it was trained on, with which settings (JSON-able)
    decision: object | None = None  # decision.SavedDecision: thresholds, recalibration, training patients; None: none

    @classmethod
    def fit(cls, cohort: Cohort, train_ids, spec: FeatureSpec, params: dict, training: dict | None = None) -> FittedModel:
        """Fit features and boosters on `train_ids` only; `training` records, among what the caller adds, the
        range of the probabilities it gives its own training patients (a single value: it cannot separate)."""
        train_ids = list(train_ids)
        labels = cohort.labels(train_ids)
        if len(set(labels.tolist())) < 2:
            raise InputError(f"{len(train_ids)} training patients, all of one class: nothing to learn a decision from")
        params = validate_params(params, "parameters")
        features, table = fit_features(cohort, spec, train_ids)
        boosters = train_boosters(table, labels, params)
        model = cls(spec, params, features, table.columns, boosters, cohort.provenance, dict(training or {}))
        fitted = model.predict_table(table)
        model.training["probability_range"] = [float(fitted.min()), float(fitted.max())]
        return model

    @property
    def separates(self) -> bool:
        """False when it gave every training patient the same probability (no tree could split)."""
        try:
            low, high = (float(v) for v in self.training["probability_range"])
        except (KeyError, TypeError, ValueError):
            return True  # not recorded: nothing known against it
        return high - low > 1e-9

    def features_of(self, cohort: Cohort, ids) -> FeatureTable:
        return self.features.transform(cohort, ids)

    def predict_table(self, table: FeatureTable) -> np.ndarray:
        return np.mean([predict_with(b, table.values) for b in self.boosters], axis=0)

    def predict_proba(self, cohort: Cohort, ids) -> Prediction:
        table = self.features_of(cohort, ids)
        if table.columns != self.columns:
            raise InputError("the model's features differ from those built from these embeddings and settings; refit it")
        probabilities = self.predict_table(table)
        bad = [i for i, p in enumerate(probabilities) if not 0.0 <= p <= 1.0]  # NaN fails both comparisons
        if len(probabilities) != len(table.ids) or bad:
            who = f"patient {table.ids[bad[0]]}" if bad else f"{len(probabilities)} of {len(table.ids)} patients"
            raise InputError(f"the model gave no valid probability for {who}; the model files may be damaged: refit it")
        return Prediction(table, probabilities)

    def predict(self, cohort: Cohort, ids) -> np.ndarray:
        return self.predict_proba(cohort, ids).labels

    def contributions(self, table: FeatureTable) -> np.ndarray:
        """(n, F + 1) SHAP values in log-odds (last column: base value), averaged over the ensemble's boosters:
        exact per booster; the ensemble averages probabilities, so close enough to rank features."""
        return np.mean([predict_with(b, table.values, pred_contrib=True) for b in self.boosters], axis=0)

    def gain_share(self) -> np.ndarray:
        """(F,) each feature's split gain as a fraction of the total, averaged over the ensemble. Read from each
        booster's saved form: LightGBM writes split gains with fewer digits than it keeps while training, and a
        model's gains must not depend on whether it was just trained or loaded (they differed in the 7th digit)."""
        gain = np.mean([lgb.Booster(model_str=b.model_to_string()).feature_importance(importance_type="gain")
                        for b in self.boosters], axis=0)
        total = gain.sum()
        return gain / total if total > 0 else np.zeros_like(gain)
