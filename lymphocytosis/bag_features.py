"""Patient-level feature table: clinical attributes + statistics of the bag of cell embeddings.

Two kinds of image features, both optional and both chosen by `FeatureSpec`:
- statistics (mean, max, quantiles, ...) of every embedding dimension, optionally after a PCA fitted on the
  training cells -- the design card taken literally; with ~1280 dimensions and ~100 training patients
  these drown the clinical columns, so they are off by default;
- statistics of a learned per-cell score (see cell_score.py), which carry the images' signal in a handful
  of columns. This is the default.
Everything learned (PCA, cell score) is fitted on the training patients of the split only.
A patient with 0 cells gets NaN image features, which LightGBM treats as missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from .cell_score import CellStatistics, cross_fitted_scores
from .cohort import Cohort
from .errors import InputError

CLINICAL_CHOICES = ("age", "sex_male", "lymph_count", "log_lymph_count", "bag_size")


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
    inner_folds: int = 5  # cross-fitting of training patients' cell scores
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"feature specification: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def clinical_only(self) -> "FeatureSpec":
        return FeatureSpec(clinical=tuple(c for c in self.clinical if c != "bag_size"), embedding_stats=(),
                           cell_score=False, seed=self.seed)

    def validate(self) -> None:
        for name in self.clinical:
            if name not in CLINICAL_CHOICES:
                raise InputError(f"feature specification: unknown clinical feature {name!r} ({', '.join(CLINICAL_CHOICES)})")
        for name in (*self.embedding_stats, *self.cell_score_stats):
            statistic_function(name)
        if not (isinstance(self.cell_score_alpha, (int, float)) and self.cell_score_alpha > 0):
            raise InputError(f"feature specification: cell_score_alpha must be a positive number, not {self.cell_score_alpha!r}")
        for name in ("embedding_pca", "inner_folds"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise InputError(f"feature specification: {name} must be a non-negative integer, not {value!r}")


def statistic_function(name: str):
    """A bag statistic by name: mean, std, min, max, qNN (NN-th percentile), topNN (mean of the top NN%)."""
    if name in {"mean", "std", "min", "max"}:
        return getattr(np, name)
    if name.startswith("q") and name[1:].isdigit() and 0 <= int(name[1:]) <= 100:
        q = int(name[1:])
        return lambda x, axis: np.percentile(x, q, axis=axis)
    if name.startswith("top") and name[3:].isdigit() and 0 < int(name[3:]) <= 100:
        fraction = int(name[3:]) / 100

        def top_mean(x, axis):
            k = max(1, int(round(fraction * x.shape[axis])))
            return np.mean(-np.sort(-x, axis=axis).take(np.arange(k), axis=axis), axis=axis)

        return top_mean
    raise InputError(f"unknown bag statistic {name!r} (mean, std, min, max, qNN, topNN)")


def bag_statistics(bag: np.ndarray, stats: tuple[str, ...], dim: int) -> np.ndarray:
    """(len(stats) * dim,) statistics of one bag (n_cells, dim); NaN when the bag is empty."""
    if len(bag) == 0:
        return np.full(len(stats) * dim, np.nan)
    bag = bag.reshape(len(bag), dim)
    return np.concatenate([np.asarray(statistic_function(s)(bag, axis=0), dtype=np.float64) for s in stats])


class FeatureBuilder:
    """Builds the feature table for a train/other split of a cohort, fitting learned parts on train only."""

    def __init__(self, cohort: Cohort, spec: FeatureSpec):
        spec.validate()
        self.cohort = cohort
        self.spec = spec

    def _cached(self, key, compute):
        """Learned parts depend on the training patients and their own settings only, not on LightGBM's
        parameters: tuning trials that revisit the same folds reuse them (bounded, per process)."""
        cache = self.cohort._cache.setdefault("fitted", {})
        if key not in cache:
            if len(cache) >= 512:
                cache.pop(next(iter(cache)))
            cache[key] = compute()
        return cache[key]

    def _fit_pca(self, train_ids) -> dict:
        cells = np.concatenate([self.cohort.bags[pid] for pid in train_ids])
        pca = PCA(n_components=self.spec.embedding_pca, svd_solver="randomized", random_state=self.spec.seed).fit(cells)
        return {"mean": pca.mean_.tolist(), "components": pca.components_.tolist()}

    def _cell_statistics(self) -> CellStatistics:
        if "cell_statistics" not in self.cohort._cache:  # only labelled patients are ever fitted on
            self.cohort._cache["cell_statistics"] = CellStatistics({pid: self.cohort.bags[pid] for pid in self.cohort.labelled_ids})
        return self.cohort._cache["cell_statistics"]

    def clinical_table(self, ids) -> pd.DataFrame:
        table = pd.DataFrame(index=pd.Index(list(ids), name="ID"))
        for name in self.spec.clinical:
            if name == "bag_size":
                table["clinical:bag_size"] = [len(self.cohort.bags[pid]) for pid in ids]
            else:
                table[f"clinical:{name}"] = self.cohort.clinical.loc[list(ids), name].to_numpy(dtype=float)
        return table

    def _embedding_table(self, ids, state: dict) -> pd.DataFrame:
        spec = self.spec
        bags = self.cohort.bags
        if spec.embedding_pca:
            mean, components = np.asarray(state["pca"]["mean"]), np.asarray(state["pca"]["components"])
            dim, prefix = spec.embedding_pca, "pc"
            rows = [bag_statistics((bags[pid] - mean) @ components.T, spec.embedding_stats, dim) for pid in ids]
        else:
            dim, prefix = self.cohort.dim, "dim"
            cache = self.cohort._cache.setdefault(("embedding_stats", spec.embedding_stats), {})
            for pid in ids:  # raw-dimension statistics learn nothing: computed once per process
                if pid not in cache:
                    cache[pid] = bag_statistics(bags[pid], spec.embedding_stats, dim)
            rows = [cache[pid] for pid in ids]
        columns = [f"embedding:{s}[{prefix}{d}]" for s in spec.embedding_stats for d in range(dim)]
        return pd.DataFrame(np.vstack(rows), index=pd.Index(list(ids), name="ID"), columns=columns)

    def _score_table(self, ids, scores: dict[str, np.ndarray]) -> pd.DataFrame:
        names = [f"cell_score:{s}" for s in self.spec.cell_score_stats]
        values = np.vstack([bag_statistics(scores[pid][:, None], self.spec.cell_score_stats, 1) for pid in ids])
        return pd.DataFrame(values, index=pd.Index(list(ids), name="ID"), columns=names)

    def cell_scores(self, ids, state: dict) -> dict[str, np.ndarray]:
        """Per-cell scores of `ids` from a fitted state (the fit on all training patients)."""
        beta, intercept = np.asarray(state["cell_score"]["beta"]), state["cell_score"]["intercept"]
        return {pid: self.cohort.bags[pid] @ beta + intercept for pid in ids}

    def fit(self, train_ids) -> tuple[pd.DataFrame, dict, dict[str, np.ndarray]]:
        """Fit the learned parts on `train_ids`: their feature table (cell scores cross-fitted), the fitted
        state (JSON-serialisable, what `transform` needs) and their per-cell scores."""
        train_ids = list(train_ids)
        spec = self.spec
        state: dict = {}
        parts = [self.clinical_table(train_ids)]
        if spec.embedding_stats:
            if spec.embedding_pca:
                state["pca"] = self._cached(("pca", tuple(train_ids), spec.embedding_pca, spec.seed),
                                            lambda: self._fit_pca(train_ids))
            parts.append(self._embedding_table(train_ids, state))
        scores: dict[str, np.ndarray] = {}
        if spec.cell_score:
            scores, (beta, intercept) = self._cached(
                ("cell_scores", tuple(train_ids), spec.cell_score_alpha, spec.inner_folds, spec.seed),
                lambda: cross_fitted_scores(self._cell_statistics(), self.cohort.bags, train_ids,
                                            self.cohort.labels(train_ids), spec.cell_score_alpha,
                                            spec.inner_folds, spec.seed),
            )
            state["cell_score"] = {"beta": beta.tolist(), "intercept": intercept}
            parts.append(self._score_table(train_ids, scores))
        return pd.concat(parts, axis=1), state, scores

    def transform(self, ids, state: dict) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """Feature table of patients not used in the fit, and their per-cell scores."""
        ids = list(ids)
        parts = [self.clinical_table(ids)]
        if self.spec.embedding_stats:
            parts.append(self._embedding_table(ids, state))
        scores: dict[str, np.ndarray] = {}
        if self.spec.cell_score:
            scores = self.cell_scores(ids, state)
            parts.append(self._score_table(ids, scores))
        return pd.concat(parts, axis=1), scores
