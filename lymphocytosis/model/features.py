"""Patient-level feature table: clinical attributes + statistics of each bag of cell features.

Everything learned (PCA, cell score) is fitted on the training patients of the split only (`fit_features`);
`FittedFeatures.transform` applies it, unchanged, to patients it never saw. A patient with 0 cells gets NaN
image features, which LightGBM treats as missing. Each column is described by a `FeatureColumn` (family,
backbone, statistic, index) that the report reads; the string `key` only names it in tables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA

from ..contract.store import views_path
from ..errors import InputError
from .cell_score import CellScoreWeights, CellStatistics
from .cohort import CellFeatureSet, Cohort
from .cross_fit import cross_fit_problems, cross_fitted_scores, solve_cross_fit
from .feature_spec import FeatureSpec
from .json_values import number_array
from .measurements import fit_measurement_features, measurement_features
from .statistics import bag_statistics
from .tables import CLINICAL, EMBEDDING, FeatureColumn, FeatureTable, cell_score_table
from .threads import one_blas_thread, run_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PcaBasis:
    mean: np.ndarray
    components: np.ndarray  # (k, D)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "components": self.components.tolist()}

    @classmethod
    def from_dict(cls, data: dict, where: str = "PCA basis") -> PcaBasis:
        """A basis read back from model.json: `mean` (D,) and `components` (k, D), finite; an InputError names
        `where` and the key otherwise."""
        if not isinstance(data, dict) or set(data) != {"mean", "components"}:
            raise InputError(f"{where} must be an object of mean and components")
        mean = number_array(data["mean"], f"{where}.mean", 1)
        components = number_array(data["components"], f"{where}.components", 2)
        if components.shape[1] != len(mean) or len(components) > len(mean):
            raise InputError(f"{where}.components has shape {components.shape}, for a mean of {len(mean)} dimensions")
        return cls(mean, components)


def clinical_table(cohort: Cohort, spec: FeatureSpec, ids: list[str]) -> FeatureTable:
    columns, values = [], []
    for name in spec.clinical:
        columns.append(FeatureColumn(CLINICAL, attribute=name))
        if name == "bag_size":
            values.append([len(cohort.primary.bags[patient_id]) for patient_id in ids])
        else:
            values.append(cohort.clinical.loc[ids, name].to_numpy(dtype=float))
    return FeatureTable(ids, columns, np.array(values, dtype=np.float64).T.reshape(len(ids), len(columns)))


def embedding_table(feature_set: CellFeatureSet, spec: FeatureSpec, ids: list[str], pca: PcaBasis | None) -> FeatureTable:
    stats = spec.embedding_stats
    if pca is not None:
        dim, basis = len(pca.components), "pc"
        rows = [bag_statistics((feature_set.bags[patient_id] - pca.mean) @ pca.components.T, stats, dim) for patient_id in ids]
    else:
        dim, basis = feature_set.dim, "dim"
        rows = [feature_set.raw_statistics(patient_id, stats, lambda bag: bag_statistics(bag, stats, dim)) for patient_id in ids]
    columns = [FeatureColumn(EMBEDDING, backbone=feature_set.name, statistic=s, basis=basis, index=d)
               for s in stats for d in range(dim)]
    return FeatureTable(ids, columns, np.vstack(rows))


@dataclass
class FittedFeatures:
    """What `fit_features` learned on training patients: enough to build any other patient's features."""

    spec: FeatureSpec
    backbones: list[str]
    pca: dict[str, PcaBasis] = field(default_factory=dict)
    cell_score: dict[str, CellScoreWeights] = field(default_factory=dict)
    invariance: dict[str, float] = field(default_factory=dict)  # the invariance weight each cell score got (0: none)

    def transform(self, cohort: Cohort, ids) -> FeatureTable:
        """Feature table of patients not used in the fit."""

        ids = list(ids)
        parts = [clinical_table(cohort, self.spec, ids)]
        for name in self.backbones:
            feature_set = cohort.feature_set(name)
            if feature_set.measured:
                parts += measurement_features(feature_set, self.spec, ids, self.cell_score)
                continue
            parts += self.image_tables(cohort, feature_set, ids)
        return FeatureTable.join(ids, parts)

    def image_tables(self, cohort: Cohort, feature_set: CellFeatureSet, ids: list[str]) -> list[FeatureTable]:
        """One embeddings file's columns for `ids`, remembered per fitted basis and weights (the same fitted
        parts serve several tuning trials)."""
        name, parts = feature_set.name, []
        pca = self.pca.get(name)
        if pca is not None and len(pca.mean) != feature_set.dim:
            raise InputError(f"{feature_set.path}: {feature_set.dim}-dimensional embeddings, the model's PCA "
                             f"expects {len(pca.mean)}")
        if self.spec.embedding_stats:
            parts.append(cohort.memo.get_for(pca, ("embedding_table", name, tuple(ids), self.spec.embedding_stats),
                                             lambda: embedding_table(feature_set, self.spec, ids, pca)))
        if self.spec.cell_score:
            weights = self.cell_score[name]
            if len(weights.beta) != feature_set.dim:
                raise InputError(f"{feature_set.path}: {feature_set.dim}-dimensional embeddings, the model's cell "
                                 f"score expects {len(weights.beta)}")
            parts.append(cohort.memo.get_for(
                weights, ("cell_score_table", name, tuple(ids), self.spec.cell_score_stats),
                lambda: cell_score_table(name, self.spec, ids, {
                    patient_id: weights.score(feature_set.bags[patient_id]) for patient_id in ids})))
        return parts

    def to_dict(self) -> dict:
        return {"backbones": self.backbones, "pca": {k: v.to_dict() for k, v in self.pca.items()},
                "cell_score": {k: v.to_dict() for k, v in self.cell_score.items()}, "invariance": dict(self.invariance)}

    @classmethod
    def from_dict(cls, spec: FeatureSpec, data: dict) -> FittedFeatures:
        """What model.json's `features` holds, every array checked; an InputError names the key."""
        if not isinstance(data, dict) or not {"backbones", "pca", "cell_score"} <= set(data) <= {
                "backbones", "pca", "cell_score", "invariance"}:  # invariance: absent from older models
            raise InputError("features must be an object of backbones, pca, cell_score and invariance")
        backbones = data["backbones"]
        if not (isinstance(backbones, list) and backbones and all(isinstance(b, str) for b in backbones)
                and len(set(backbones)) == len(backbones)):
            raise InputError(f"features.backbones must be a list of distinct names, not {backbones!r:.80}")
        for key in ("pca", "cell_score"):
            if not isinstance(data[key], dict) or not set(data[key]) <= set(backbones):
                unknown = sorted(set(data[key]) - set(backbones)) if isinstance(data[key], dict) else []
                raise InputError(f"features.{key} must map names of features.backbones to their fitted state"
                                 + (f" ({unknown[0]!r} is not one)" if unknown else ""))
        invariance = data.get("invariance", {})
        if not (isinstance(invariance, dict) and set(invariance) <= set(backbones) and all(
                type(v) in (int, float) and 0 <= v <= 1e4 for v in invariance.values())):
            raise InputError(f"features.invariance must map names of features.backbones to weights from 0 to 1e4, "
                             f"not {invariance!r:.80}")
        return cls(spec, list(backbones),
                   {k: PcaBasis.from_dict(v, f"features.pca[{k!r}]") for k, v in data["pca"].items()},
                   {k: CellScoreWeights.from_dict(v, f"features.cell_score[{k!r}]") for k, v in data["cell_score"].items()},
                   {k: float(v) for k, v in invariance.items()})


@one_blas_thread
def fit_pca(feature_set: CellFeatureSet, spec: FeatureSpec, train_ids: list[str]) -> PcaBasis:
    """On one BLAS thread, wherever it is fitted (a CV's folds in threads, tuning, `fit`): the randomized SVD's
    last digits (about 1e-6) depend on the BLAS thread count, so the components are the same on any machine."""
    cells = np.concatenate([feature_set.bags[patient_id] for patient_id in train_ids])
    if spec.embedding_pca > min(cells.shape):
        raise InputError(f"feature specification: embedding_pca {spec.embedding_pca} exceeds what {len(cells)} training "
                         f"cells of {cells.shape[1]} dimensions allow ({min(cells.shape)})")
    pca = PCA(n_components=spec.embedding_pca, svd_solver="randomized", random_state=spec.seed).fit(cells)
    return PcaBasis(pca.mean_.astype(np.float64), pca.components_.astype(np.float64))


def fit_features(cohort: Cohort, spec: FeatureSpec, train_ids) -> tuple[FittedFeatures, FeatureTable]:
    """Fit the learned parts on `train_ids`; their feature table has cross-fitted cell scores (a training
    patient's cells scored by a ridge that never saw that patient)."""

    spec.validate()
    train_ids = list(train_ids)
    fitted = FittedFeatures(spec, [s.name for s in cohort.sets])
    parts = [clinical_table(cohort, spec, train_ids)]
    for feature_set in cohort.sets:
        if feature_set.measured:
            parts += fit_measurement_features(cohort, feature_set, spec, train_ids, fitted.cell_score)
        else:
            parts += fit_image_features(cohort, feature_set, spec, train_ids, fitted)
    return fitted, FeatureTable.join(train_ids, parts)


def warn_without_views(feature_set: CellFeatureSet) -> None:
    """Said once per file and process: the model is fitted, but it has not learnt what another laboratory's
    images change."""
    if not feature_set.warned_without_views:
        feature_set.warned_without_views = True
        log.warning("%s: no training views beside it (%s), so the cell score is fitted without learning to ignore "
                    "acquisition changes (compression, stain, focus...); rerun extract.py without --no-views to make "
                    "them", feature_set.path, views_path(feature_set.path))


def cell_statistics(cohort: Cohort, feature_set: CellFeatureSet, spec: FeatureSpec) -> CellStatistics:
    """The per-patient statistics a fit of `spec`'s cell score on this file sums (computed on first use)."""
    return feature_set.statistics(cohort.labelled_ids, spec.cell_score_invariance)


def prepare_statistics(cohort: Cohort, spec: FeatureSpec, threads: int | None = None) -> None:
    """The cell statistics every fold of a CV sums, computed before its folds start, on `threads` threads. Left
    to the first fold, they had that fold's thread only: the other folds wait for them, their threads idle."""
    missing = [s for s in cohort.sets if not s.measured and not s.has_statistics(spec.cell_score_invariance)]
    if spec.cell_score and missing:
        run_all(lambda feature_set: cell_statistics(cohort, feature_set, spec), missing, threads)


def fit_image_features(cohort: Cohort, feature_set: CellFeatureSet, spec: FeatureSpec, train_ids: list[str],
                       fitted: FittedFeatures) -> list[FeatureTable]:
    """One embeddings file's learned parts (recorded in `fitted`) and its training patients' columns. Each is
    remembered under what it depends on, so that tuning trials that differ in other settings reuse it."""
    name, key, parts = feature_set.name, (feature_set.name, tuple(train_ids), spec.seed), []
    if spec.embedding_stats:
        if spec.embedding_pca:
            fitted.pca[name] = cohort.memo.get(("pca", *key, spec.embedding_pca),
                                               lambda: fit_pca(feature_set, spec, train_ids))
        parts.append(cohort.memo.get(("embedding_table", *key, spec.embedding_pca, spec.embedding_stats),
                                     lambda: embedding_table(feature_set, spec, train_ids, fitted.pca.get(name))))
    if spec.cell_score:
        invariance = feature_set.invariance(spec.cell_score_invariance)
        if invariance == 0 and spec.cell_score_invariance > 0:
            warn_without_views(feature_set)
        fitted.invariance[name] = invariance
        fit_key = (*key, spec.inner_folds, invariance)

        def fit():
            statistics, labels = cell_statistics(cohort, feature_set, spec), cohort.labels(train_ids)
            kept = cohort.ridge_memo  # read once: a study that ends meanwhile sets it back to None
            if kept is None:  # one penalty: each fit solved where it is built
                return cross_fitted_scores(statistics, feature_set.bags, train_ids, labels, spec.cell_score_alpha,
                                           spec.inner_folds, spec.seed)
            problems = kept.get(fit_key, lambda: cross_fit_problems(
                statistics, train_ids, labels, spec.inner_folds, spec.seed))  # tuning: kept for other penalties
            return solve_cross_fit(problems, feature_set.bags, spec.cell_score_alpha)

        cross_fit = cohort.memo.get(("cell_score", *fit_key, spec.cell_score_alpha), fit)
        fitted.cell_score[name] = cross_fit.weights
        parts.append(cohort.memo.get(("cell_score_table", *fit_key, spec.cell_score_alpha, spec.cell_score_stats),
                                     lambda: cell_score_table(name, spec, train_ids, cross_fit.scores)))
    return parts
