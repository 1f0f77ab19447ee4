"""Bag features and fold hygiene: statistic names, 0-cell patients, learned parts fitted on training folds only
(spied, and checked by flipping a held-out patient's label), stratified deterministic folds, reproducible CV.

Runs on hand-made embeddings (`write_fake_embeddings`: 16 dimensions, no torch), so every fit is cheap.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import model as model_cli
from conftest import run_main, write_fake_embeddings
from lymphocytosis.errors import InputError
from lymphocytosis.model import features as bag_features
from lymphocytosis.model import threads
from lymphocytosis.model.cell_score import CellStatistics
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import CVDesign, compare, cross_validate, repeated_folds
from lymphocytosis.model.feature_spec import FeatureSpec
from lymphocytosis.model.features import fit_features
from lymphocytosis.model.params import DEFAULT_PARAMS
from lymphocytosis.model.statistics import bag_statistics, statistic_function
from lymphocytosis.model.tables import CELL_SCORE, CLINICAL, EMBEDDING, FeatureColumn

PCA_SPEC = FeatureSpec(embedding_stats=("mean",), embedding_pca=2)


def params():
    return dict(DEFAULT_PARAMS, num_iterations=40)


# --- statistics --------------------------------------------------------------------------------------------------


def test_statistic_functions():
    x = np.arange(1.0, 11.0)[:, None] * np.array([1.0, -1.0])  # 10 cells, 2 dimensions
    assert statistic_function("mean")(x, axis=0).tolist() == [5.5, -5.5]
    assert statistic_function("std")(x, axis=0).tolist() == pytest.approx([np.std(np.arange(1, 11))] * 2)
    assert statistic_function("min")(x, axis=0).tolist() == [1.0, -10.0]
    assert statistic_function("max")(x, axis=0).tolist() == [10.0, -1.0]
    assert statistic_function("q50")(x, axis=0).tolist() == [5.5, -5.5]
    assert statistic_function("q0")(x, axis=0).tolist() == [1.0, -10.0]
    assert statistic_function("q100")(x, axis=0).tolist() == [10.0, -1.0]
    assert statistic_function("q90")(x, axis=0).tolist() == pytest.approx([9.1, -1.9])
    assert statistic_function("top20")(x, axis=0).tolist() == [9.5, -1.5]  # mean of the 2 largest of 10
    assert statistic_function("top100")(x, axis=0).tolist() == [5.5, -5.5]
    assert statistic_function("top1")(x, axis=0).tolist() == [10.0, -1.0]  # at least one cell


@pytest.mark.parametrize("name", ["median", "q101", "q", "q-5", "q5.5", "top0", "top101", "top", "Mean", "", "sum"])
def test_unknown_statistic(name):
    with pytest.raises(InputError, match="unknown bag statistic"):
        statistic_function(name)


@pytest.mark.parametrize("spec", [
    FeatureSpec(embedding_stats=("mean", "median")),
    FeatureSpec(cell_score_stats=("mean", "top0")),
    FeatureSpec(clinical=("age", "height")),
])
def test_fit_features_validates_spec(fake_embeddings, spec):
    cohort = load_cohort(fake_embeddings)
    with pytest.raises(InputError):
        fit_features(cohort, spec, cohort.labelled_ids)


def test_bag_statistics_layout_and_empty_bag():
    bag = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert bag_statistics(bag, ("mean", "max"), 2).tolist() == [2.0, 4.0, 3.0, 6.0]  # statistic-major
    empty = bag_statistics(np.zeros((0, 2)), ("mean", "max", "q50"), 2)
    assert empty.shape == (6,) and np.isnan(empty).all()


def test_feature_spec_round_trip():
    spec = FeatureSpec(clinical=("age", "bag_size"), embedding_stats=("mean", "q75"), embedding_pca=3,
                       cell_score_stats=("top10",), cell_score_alpha=0.3)
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(InputError, match="unknown key"):
        FeatureSpec.from_dict({**spec.to_dict(), "colour": 1})
    assert spec.clinical_only() == FeatureSpec(clinical=("age",), embedding_stats=(), cell_score=False, seed=spec.seed)


# --- 0-cell patients ----------------------------------------------------------------------------------------------

EMPTY = ("F1", "F5", "T0")


@pytest.fixture(scope="module")
def empty_embeddings(tmp_path_factory):
    return write_fake_embeddings(tmp_path_factory.mktemp("empty"), empty=EMPTY)


def test_zero_cell_patient_gets_nan_image_features(empty_embeddings):
    cohort = load_cohort(empty_embeddings)
    backbone = cohort.primary.name
    assert cohort.primary.bags["F1"].shape == (0, 16)
    spec = FeatureSpec(clinical=("age", "sex_male", "lymph_count", "bag_size"), embedding_stats=("mean", "q90"),
                       embedding_pca=2)
    fitted, train_table = fit_features(cohort, spec, cohort.labelled_ids)
    test_table = fitted.transform(cohort, cohort.unlabelled_ids)
    assert train_table.columns == test_table.columns
    image_columns = [c for c in train_table.columns if c.family != CLINICAL]
    assert image_columns == [
        *(FeatureColumn(EMBEDDING, backbone=backbone, statistic=s, basis="pc", index=d) for s in ("mean", "q90") for d in (0, 1)),
        *(FeatureColumn(CELL_SCORE, backbone=backbone, statistic=s) for s in spec.cell_score_stats),
    ]
    image = [c.key for c in image_columns]
    for table in (train_table.frame, test_table.frame):
        for patient_id in table.index:
            if patient_id in EMPTY:
                assert table.loc[patient_id, image].isna().all(), patient_id
                assert table.loc[patient_id, "clinical:bag_size"] == 0
            else:
                assert np.isfinite(table.loc[patient_id, image].to_numpy(dtype=float)).all(), patient_id
        clinical = [c for c in table.columns if c.startswith("clinical:")]
        assert np.isfinite(table[clinical].to_numpy(dtype=float)).all()
    assert train_table.cell_scores[backbone]["F1"].shape == (0,) and test_table.cell_scores[backbone]["T0"].shape == (0,)


def test_zero_cell_patients_cv_fit_predict_cli(empty_embeddings, tmp_path):
    args = ["--embeddings", str(empty_embeddings), "--params", "default", "--max-without-cells", "0.1"]  # 2 of 24
    result = run_main(model_cli.main, ["cv", *args, "--folds", "3", "--repeats", "1", "--json", str(tmp_path / "cv.json"),
                                       "--cv-dir", str(tmp_path / "cv")])
    assert result.code == 0, result.stderr
    oof = {row["id"]: row["probability"] for row in json.loads((tmp_path / "cv.json").read_text())["oof"]}
    assert {"F1", "F5"} <= set(oof) and all(0 <= p <= 1 for p in oof.values())
    model_dir = tmp_path / "model"
    result = run_main(model_cli.main, ["fit", *args, "--model-dir", str(model_dir)])
    assert result.code == 0, result.stderr
    out = tmp_path / "predictions.csv"
    result = run_main(model_cli.main, ["predict", "--embeddings", str(empty_embeddings), "--model-dir", str(model_dir),
                                       "--out", str(out), "--submission", str(tmp_path / "submission.csv"),
                                       "--clinical-only-fallback"])
    assert result.code == 0, result.stderr
    predictions = pd.read_csv(out).set_index("ID")
    assert list(predictions.index) == ["T0", "T1", "T2", "T3"]
    assert predictions["PROBABILITY"].between(0, 1).all()
    assert list(predictions["EVIDENCE"]) == ["clinical only", "images+clinical", "images+clinical", "images+clinical"]


# --- folds --------------------------------------------------------------------------------------------------------


def test_repeated_folds_partition_stratified_deterministic():
    ids = [f"P{i}" for i in range(31)]
    labels = np.array([int(i % 3 != 0) for i in range(31)])  # 11 vs 20
    folds = repeated_folds(ids, labels, 4, 3, seed=7)
    assert [(f.repeat, f.fold) for f in folds] == [(r, k) for r in range(3) for k in range(4)]
    label_of = dict(zip(ids, labels))
    for repeat in range(3):
        mine = [f for f in folds if f.repeat == repeat]
        held_out = [patient_id for f in mine for patient_id in f.test_ids]
        assert sorted(held_out) == sorted(ids)  # every patient held out exactly once per repeat
        for fold in mine:
            assert not set(fold.train_ids) & set(fold.test_ids)
            assert set(fold.train_ids) | set(fold.test_ids) == set(ids)
            counts = Counter(label_of[patient_id] for patient_id in fold.test_ids)
            assert counts[0] in (2, 3) and counts[1] == 5  # 11/4 and 20/4: stratified
    assert folds == repeated_folds(ids, labels, 4, 3, seed=7)
    other = repeated_folds(ids, labels, 4, 3, seed=8)
    assert [f.test_ids for f in other] != [f.test_ids for f in folds]
    # repeats are different shuffles, not copies
    assert [f.test_ids for f in folds if f.repeat == 0] != [f.test_ids for f in folds if f.repeat == 1]


def test_repeated_folds_needs_enough_of_each_class():
    with pytest.raises(InputError, match="5-fold"):
        repeated_folds([f"P{i}" for i in range(12)], np.array([1] * 8 + [0] * 4), 5, 1, 0)


# --- learned parts see training folds only -----------------------------------------------------------------------


@pytest.fixture
def cohort(fake_embeddings):
    """A fresh cohort: nothing learned cached from another test."""
    return load_cohort(fake_embeddings)


def folds_of(cohort, folds=3, repeats=2, seed=0):
    ids = cohort.labelled_ids
    return repeated_folds(ids, cohort.labels(ids), folds, repeats, seed)


def test_cell_score_and_pca_fitted_on_training_ids_only(cohort, monkeypatch):
    sums_calls, pca_cells = [], []
    original_group_sums = CellStatistics.group_sums

    def spy_group_sums(self, ids, labels, groups, n_groups):
        sums_calls.append(list(ids))
        return original_group_sums(self, ids, labels, groups, n_groups)

    class SpyPCA(bag_features.PCA):
        def fit(self, X, y=None):
            pca_cells.append(np.array(X, copy=True))
            return super().fit(X, y)

    monkeypatch.setattr(CellStatistics, "group_sums", spy_group_sums)
    monkeypatch.setattr(bag_features, "PCA", SpyPCA)
    monkeypatch.setenv(threads.ENVIRONMENT, "1")  # the spies record in call order: one fold after the other
    folds = folds_of(cohort)
    result = cross_validate(cohort, PCA_SPEC, params(), folds)
    assert np.isfinite(result.probabilities).all()
    # one fit of each learned part per fold (transform refits nothing), on exactly that fold's training patients
    assert len(sums_calls) == len(pca_cells) == len(folds)
    for fold, ids, cells in zip(folds, sums_calls, pca_cells):
        assert not set(ids) & set(fold.test_ids)
        assert sorted(ids) == sorted(fold.train_ids)
        expected = np.concatenate([cohort.primary.bags[patient_id] for patient_id in fold.train_ids])
        assert cells.shape == expected.shape and np.array_equal(cells, expected)


def test_held_out_patient_label_does_not_leak(fake_embeddings):
    """Flipping a held-out patient's own label changes nothing about its prediction in that fold."""
    spec = PCA_SPEC
    original, flipped = load_cohort(fake_embeddings), load_cohort(fake_embeddings)
    folds = folds_of(original, repeats=1)
    patient = folds[0].test_ids[0]
    flipped.clinical.loc[patient, "label"] = 1 - flipped.clinical.loc[patient, "label"]
    a = cross_validate(original, spec, params(), folds)
    b = cross_validate(flipped, spec, params(), folds)
    backbone = original.primary.name
    table_a, table_b = a.folds[0].prediction.table, b.folds[0].prediction.table
    assert np.array_equal(table_a.cell_scores[backbone][patient], table_b.cell_scores[backbone][patient])
    pd.testing.assert_frame_equal(table_a.frame, table_b.frame)
    position = a.ids.index(patient)
    assert a.probabilities[0, position] == b.probabilities[0, position]
    # the check has teeth: where the patient trains, the flip changes the held-out patients' cell scores
    for k in (1, 2):
        sa = a.folds[k].prediction.table.cell_scores[backbone]
        sb = b.folds[k].prediction.table.cell_scores[backbone]
        assert any(not np.array_equal(sa[patient_id], sb[patient_id]) for patient_id in folds[k].test_ids)


# --- reproducibility ----------------------------------------------------------------------------------------------


def test_cv_comparison_deterministic(fake_embeddings):
    spec = FeatureSpec()
    comparison = compare(load_cohort(fake_embeddings), spec, params(), CVDesign(3, 2, 3))
    first = comparison.summary_dict()
    second = compare(load_cohort(fake_embeddings), spec, params(), CVDesign(3, 2, 3)).summary_dict()
    assert first == second
    full = comparison.full
    assert full.probabilities.shape == (2, 24) and np.isfinite(full.probabilities).all()
    other = compare(load_cohort(fake_embeddings), spec, params(), CVDesign(3, 2, 4)).summary_dict()
    assert [row["probability"] for row in other["oof"]] != [row["probability"] for row in first["oof"]]


def test_cross_fitting_with_fewer_patients_than_inner_folds():
    """4 tumoral / 2 reactive patients and 5 inner folds: capped to 2 folds, each fit seeing both classes."""
    from lymphocytosis.model.cell_score import CellStatistics
    from lymphocytosis.model.cross_fit import cross_fitted_scores

    rng = np.random.default_rng(0)
    bags = {f"P{i}": rng.normal(size=(5, 4)).astype(np.float32) + (i < 4) for i in range(6)}
    labels = np.array([1, 1, 1, 1, 0, 0])
    for seed in range(20):
        fit = cross_fitted_scores(CellStatistics(bags), bags, list(bags), labels, 0.1, 5, seed)
        assert set(fit.scores) == set(bags) and np.isfinite(fit.weights.beta).all()
        assert all(np.isfinite(s).all() for s in fit.scores.values())


def test_cell_score_solve_falls_back_to_float64(monkeypatch):
    """A near-constant embedding dimension can make float32 Cholesky fail: the float64 fallback gives the same
    weights where both work, weight 0 to rounding-level dimensions, and no crash."""
    from scipy import linalg

    from lymphocytosis.model.cell_score import CellStatistics
    from lymphocytosis.model.cross_fit import cross_fitted_scores

    rng = np.random.default_rng(0)
    bags = {f"P{i}": (rng.normal(size=(6, 12)) + (i % 2)).astype(np.float32) for i in range(16)}
    for bag in bags.values():
        bag[:, 5] = 0.0
    bags["P3"][0, 5] = 1e-6  # rounding-level variance in one dimension
    labels = np.array([i % 2 for i in range(16)])
    stats = CellStatistics(bags)
    fast = cross_fitted_scores(stats, bags, list(bags), labels, 0.1, 5, 0).weights

    def failing(*args, **kwargs):
        raise linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(CellStatistics, "solve_float32", failing)
    slow = cross_fitted_scores(CellStatistics(bags), bags, list(bags), labels, 0.1, 5, 0).weights
    assert slow.beta[5] == 0.0 and np.isfinite(slow.beta).all()
    keep = np.arange(12) != 5
    np.testing.assert_allclose(slow.beta[keep], fast.beta[keep], rtol=2e-3, atol=1e-4)
