"""The cell score's ridge from per-patient sufficient statistics is the ridge fitted on the cells themselves.

A direct float64 reference (weighted least squares on the standardised cells, solved by `lstsq`) against the
sufficient-statistics solve; the Gram matrices against the chunked sums from the cells (used above the memory
budget); problems reused across penalties against fresh ones, and kept only while tuning; the memo's byte bound;
the seed ensemble's one Dataset against a Dataset per seed. Small random data: milliseconds (the CVs of the
fake 24-patient embeddings: about a second).
"""

from __future__ import annotations

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pytest
from scipy import linalg

from conftest import SMALL
from lymphocytosis.model import cell_score, features
from lymphocytosis.model.cell_score import CellStatistics
from lymphocytosis.model.classifier import balanced_weights, train_boosters
from lymphocytosis.model.cohort import FitMemo, load_cohort
from lymphocytosis.model.cross_fit import cross_fit_problems, cross_fitted_scores, solve_cross_fit
from lymphocytosis.model.evaluation import cross_validate, repeated_folds
from lymphocytosis.model.params import DEFAULT_PARAMS, FIXED_PARAMS
from lymphocytosis.model.tables import CLINICAL, FeatureColumn, FeatureTable
from lymphocytosis.model.tuned_params import Settings


def integer_bags(seed: int, n_patients: int = 24, dim: int = 6):
    """Small-integer cells and bag sizes 0, 1, 4 or 16: every Gram matrix, 1/n and sqrt(1/n) is exact in float32,
    so the sufficient statistics carry no rounding and the solves can be compared to 1e-9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_patients) % 2
    sizes = rng.choice([0, 1, 4, 16], size=n_patients)
    sizes[:4] = [4, 16, 1, 4]  # both classes have cells
    bags = {f"P{i}": (rng.integers(-3, 4, size=(sizes[i], dim)) + labels[i] * (np.arange(dim) % 3 == 0)).astype(np.float32)
            for i in range(n_patients)}
    return bags, labels


def direct_ridge(bags: dict[str, np.ndarray], labels: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """The documented ridge, in float64 on the cells: each class weighs 1/2, each patient of a class the same,
    each cell of a patient the same; the penalty on standardised dimensions."""
    present = [(bag.astype(np.float64), int(label)) for bag, label in zip(bags.values(), labels) if len(bag)]
    per_class = np.bincount([label for _, label in present], minlength=2)
    x = np.concatenate([bag for bag, _ in present])
    y = np.concatenate([np.full(len(bag), label, dtype=np.float64) for bag, label in present])
    w = np.concatenate([np.full(len(bag), 0.5 / per_class[label] / len(bag)) for bag, label in present])
    mean = w @ x
    scale = np.sqrt(w @ (x - mean) ** 2)
    z = (x - mean) / scale
    system = np.vstack([np.sqrt(w)[:, None] * z, np.sqrt(alpha) * np.eye(x.shape[1])])
    target = np.concatenate([np.sqrt(w) * (y - w @ y), np.zeros(x.shape[1])])
    beta = np.linalg.lstsq(system, target, rcond=None)[0] / scale
    return beta, float(w @ y - mean @ beta)


def statistics_ridge(stats: CellStatistics, bags, labels, alpha: float):
    ids = list(bags)
    counts, m1, m2 = stats.group_sums(ids, labels, np.zeros(len(ids), int), 1)
    return stats.solve(counts[0], m1[0], m2[0], alpha)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.01, 0.1, 3.0])
def test_sufficient_statistics_ridge_is_the_direct_ridge(seed, alpha, monkeypatch):
    bags, labels = integer_bags(seed)
    assert any(len(bag) == 0 for bag in bags.values())  # patients with 0 cells take part (and weigh nothing)
    beta, intercept = direct_ridge(bags, labels, alpha)
    # the float32 solve (the default): float32 rounding of a well-conditioned 6 x 6 system
    fast = statistics_ridge(CellStatistics(bags), bags, labels, alpha)
    np.testing.assert_allclose(fast.beta, beta, rtol=1e-4, atol=1e-6)
    # the float64 solve on the same (here exact) sums: the same ridge to 1e-9
    monkeypatch.setattr(CellStatistics, "solve_float32", lambda *a: (_ for _ in ()).throw(linalg.LinAlgError("x")))
    exact = statistics_ridge(CellStatistics(bags), bags, labels, alpha)
    np.testing.assert_allclose(exact.beta, beta, rtol=1e-9, atol=1e-12)
    assert exact.intercept == pytest.approx(intercept, rel=1e-9, abs=1e-12)


def test_patients_without_cells_change_nothing():
    bags, labels = integer_bags(0)
    kept = {p: b for p, b in bags.items() if len(b)}
    kept_labels = np.array([label for p, label in zip(bags, labels) if len(bags[p])])
    a = statistics_ridge(CellStatistics(bags), bags, labels, 0.1)
    b = statistics_ridge(CellStatistics(kept), kept, kept_labels, 0.1)
    assert np.array_equal(a.beta, b.beta) and a.intercept == b.intercept


@pytest.mark.parametrize("exact", [True, False])
def test_cell_sums_over_budget_equal_the_gram_sums(exact, monkeypatch):
    """Above the memory budget no Gram matrix is kept: the sums come from the cells, chunk by chunk (chunks smaller
    than one patient's bag, and spanning patients, both exercised), and equal those of the Gram matrices: exactly
    on exact data, to float32 rounding on any."""
    monkeypatch.setattr(cell_score, "CHUNK_CELLS", 5)
    if exact:
        bags, labels = integer_bags(1)
    else:
        rng = np.random.default_rng(1)
        labels = np.arange(20) % 2
        bags = {f"P{i}": rng.normal(size=(int(rng.integers(0, 30)), 7)).astype(np.float32) + labels[i] for i in range(20)}
    ids = list(bags)
    groups = np.arange(len(ids)) % 3
    stored, direct = CellStatistics(bags), CellStatistics(bags, max_bytes=0)
    assert stored.grams is not None and direct.grams is None
    for a, b in zip(stored.group_sums(ids, labels, groups, 3), direct.group_sums(ids, labels, groups, 3)):
        np.testing.assert_allclose(b, a, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
    fit_a = cross_fitted_scores(stored, bags, ids, labels, 0.1, 3, 0)
    fit_b = cross_fitted_scores(direct, bags, ids, labels, 0.1, 3, 0)
    np.testing.assert_allclose(fit_b.weights.beta, fit_a.weights.beta, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("float32", [True, False], ids=["float32", "float64 fallback"])
def test_problems_reused_across_penalties_give_the_same_fits(monkeypatch, float32):
    """Kept problems solved for each penalty (tuning) and each fit solved once where it is built (a CV): the same
    bits, in float32 and in the float64 fallback (where the one reads its sums again, the other the ones it has)."""
    rng = np.random.default_rng(3)
    labels = np.arange(30) % 2
    bags = {f"P{i}": rng.normal(size=(12, 9)).astype(np.float32) + 0.3 * labels[i] for i in range(30)}
    ids, stats = list(bags), CellStatistics(bags)
    if not float32:
        def cannot_factor(*args):
            raise linalg.LinAlgError("forced")

        monkeypatch.setattr(CellStatistics, "solve_float32", cannot_factor)
    problems = cross_fit_problems(stats, ids, labels, 5, 7)
    for alpha in (0.01, 1.0, 0.01):
        reused = solve_cross_fit(problems, bags, alpha)
        fresh = cross_fitted_scores(stats, bags, ids, labels, alpha, 5, 7)
        assert np.array_equal(reused.weights.beta, fresh.weights.beta)
        assert reused.weights.intercept == fresh.weights.intercept
        assert all(np.array_equal(reused.scores[p], fresh.scores[p]) for p in ids) and len(fresh.scores) == 30
    assert problems.nbytes >= 6 * 45 * 4  # 1 + 5 packed 9 x 9 triangles


def cell_score_weights(result) -> list[np.ndarray]:
    return [weights.beta for fold in result.folds for weights in fold.model.features.cell_score.values()]


def test_ridge_problems_are_kept_only_while_tuning(fake_embeddings, monkeypatch):
    """A plain CV solves each ridge fit where it is built and keeps none; while tuning, the problems of a fold are
    built once, kept, and solved again for another penalty: the same cell scores and probabilities either way,
    nothing kept afterwards."""
    built = []
    monkeypatch.setattr(features, "cross_fit_problems", lambda *a: built.append(a[1]) or cross_fit_problems(*a))
    spec, params = Settings().spec, {**DEFAULT_PARAMS, **SMALL}
    plain_cohort = load_cohort(fake_embeddings)
    ids = plain_cohort.labelled_ids
    folds = repeated_folds(ids, plain_cohort.labels(ids), 3, 1, 0)
    plain = cross_validate(plain_cohort, spec, params, folds, keep_models=True)
    assert not built and plain_cohort.ridge_memo is None
    tuning = load_cohort(fake_embeddings)
    with tuning.keeping_ridge_problems():
        cross_validate(tuning, replace(spec, cell_score_alpha=10 * spec.cell_score_alpha), params, folds)
        assert len(built) == len(folds) and tuning.ridge_memo.nbytes > 0
        reused = cross_validate(tuning, spec, params, folds, keep_models=True)
        assert len(built) == len(folds)  # no problem built again for the second penalty
    assert tuning.ridge_memo is None
    assert all(map(np.array_equal, cell_score_weights(reused), cell_score_weights(plain)))
    assert len(cell_score_weights(plain)) == len(folds)
    assert np.array_equal(reused.probabilities, plain.probabilities) and not np.isnan(plain.probabilities).any()


def test_a_study_keeps_the_ridge_problems_while_it_runs(fake_embeddings, monkeypatch):
    """Tuning's trials share their folds: run_study keeps the problems for them, and lets them go at the end."""
    import optuna

    from lymphocytosis.model import tuning

    solved_once = []
    monkeypatch.setattr(features, "cross_fitted_scores", lambda *a: solved_once.append(1) or cross_fitted_scores(*a))
    cohort = load_cohort(fake_embeddings)
    ids = cohort.labelled_ids
    seen = []
    original = features.fit_image_features

    def spy(cohort, *args):
        seen.append(cohort.ridge_memo is not None)
        return original(cohort, *args)

    monkeypatch.setattr(features, "fit_image_features", spy)
    study = tuning.create_study("kept", optuna.storages.InMemoryStorage(), 0)
    tuning.run_study(study, cohort, repeated_folds(ids, cohort.labels(ids), 3, 1, 0), 2)
    assert seen and all(seen) and not solved_once and cohort.ridge_memo is None


def test_memo_bounded_in_bytes():
    class Sized:
        def __init__(self, nbytes):
            self.nbytes = nbytes

    memo = FitMemo(max_bytes=100)
    for key in range(4):
        memo.get(key, lambda: Sized(40))
    assert memo.nbytes == 80 and list(memo._items) == [2, 3]  # least recently used out first
    memo.get(2, lambda: pytest.fail("kept: not recomputed"))
    memo.get("big", lambda: Sized(101))  # larger than the whole budget: not kept, nothing evicted
    assert "big" not in memo._items and memo.nbytes == 80
    owner, other = object(), object()
    assert memo.get_for(owner, ("t",), lambda: 1) == 1 and memo.get_for(owner, ("t",), lambda: 2) == 1
    assert memo.get_for(other, ("t",), lambda: 3) == 3


def test_one_dataset_for_the_seed_ensemble_gives_the_same_boosters():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(60, 4))
    labels = (values[:, 0] + rng.normal(size=60) > 0).astype(int)
    table = FeatureTable([f"P{i}" for i in range(60)], [FeatureColumn(CLINICAL, attribute=f"a{j}") for j in range(4)],
                         values)
    params = {**DEFAULT_PARAMS, "num_iterations": 20, "n_models": 3}
    boosters = train_boosters(table, labels, params)
    run = {k: v for k, v in params.items() if k != "n_models"}
    for k, booster in enumerate(boosters):  # the former way: a Dataset per seed, the model string round trip
        data = lgb.Dataset(values, label=labels, weight=balanced_weights(labels),
                           feature_name=[f"clinical_a{j}" for j in range(4)],
                           params={"max_bin": run["max_bin"], "min_data_in_bin": run["min_data_in_bin"], "verbosity": -1})
        alone = lgb.train({**run, **FIXED_PARAMS, "seed": FIXED_PARAMS["seed"] + k}, data)
        assert booster.model_to_string() == alone.model_to_string()
        assert np.array_equal(booster.predict(values, num_threads=1), alone.predict(values))


def random_statistics(seed: int = 5, n_patients: int = 30, dim: int = 11):
    rng = np.random.default_rng(seed)
    labels = np.arange(n_patients) % 2
    bags = {f"P{i}": (rng.normal(size=(int(rng.integers(0, 25)), dim)) + 0.4 * labels[i]).astype(np.float32)
            for i in range(n_patients)}
    return bags, labels, CellStatistics(bags)


def test_gram_sums_are_the_weighted_product():
    """gram_sums (a saxpy per patient, in patient order) against the matrix product it replaced, and against float64:
    the product's own chain of multiply-adds (bit-identical with OpenBLAS; float32 rounding allowed elsewhere)."""
    bags, labels, stats = random_statistics()
    groups = np.arange(len(labels)) % 4
    weights = np.zeros((8, len(labels)))
    for i, (label, group) in enumerate(zip(labels, groups)):
        if stats.n[i]:
            weights[2 * group + label, i] = 1.0 / stats.n[i]
    weights32 = weights.astype(np.float32)
    sums = stats.gram_sums(weights32)
    product = weights32 @ stats.grams
    np.testing.assert_allclose(sums, product, rtol=1e-6, atol=1e-7)
    exact = weights32.astype(np.float64) @ stats.grams.astype(np.float64)
    np.testing.assert_allclose(sums, exact, rtol=1e-5, atol=1e-6)
    counts, m1, m2 = stats.group_sums(list(bags), labels, groups, 4)
    assert np.array_equal(m2.reshape(8, -1), sums)


def former_problem_and_solve(stats: CellStatistics, counts, m1, m2, alpha: float):
    """The former standardisation (index scatters into a C-ordered upper triangle) and solve (cho_factor/cho_solve)."""
    class_weight = 0.5 / np.maximum(counts, 1.0)
    mean = class_weight @ m1
    cov_xy = class_weight[1] * m1[1] - 0.5 * mean
    upper = np.zeros((stats.dim, stats.dim), dtype=np.float32)
    upper.ravel()[stats.packed] = np.float32(class_weight[0]) * m2[0] + np.float32(class_weight[1]) * m2[1]
    mean32 = mean.astype(np.float32)
    upper -= np.outer(mean32, mean32)
    scale = np.sqrt(np.clip(np.diag(upper).astype(np.float64), 1e-12, None))
    inverse_scale = (1.0 / scale).astype(np.float32)
    upper *= inverse_scale[None, :]
    upper *= inverse_scale[:, None]
    packed = upper.ravel()[stats.packed]
    rhs = (cov_xy / scale).astype(np.float32)
    system = np.zeros((stats.dim, stats.dim), dtype=np.float32)
    system.ravel()[stats.packed] = packed
    system[np.diag_indices_from(system)] += np.float32(alpha)
    factor = linalg.cho_factor(system.T, lower=True, overwrite_a=True)
    return packed, scale, rhs, linalg.cho_solve(factor, rhs).astype(np.float64) / scale


@pytest.mark.parametrize("alpha", [0.01, 0.1, 3.0])
def test_problem_and_solve_are_the_former_arithmetic(alpha):
    """The standardised problem (LAPACK tpttr/trttp, outer product in the matrix's own order) and the direct
    potrf/potrs solve: the same float32 operations on every entry as before, so the same bits."""
    bags, labels, stats = random_statistics()
    counts, m1, m2 = stats.group_sums(list(bags), labels, np.zeros(len(labels), int), 1)
    problem = stats.problem(counts[0], m1[0], m2[0], lambda: (counts[0], m1[0], m2[0]))
    packed, scale, rhs, beta = former_problem_and_solve(stats, counts[0], m1[0], m2[0], alpha)
    assert np.array_equal(problem.packed, packed) and np.array_equal(problem.scale, scale)
    assert np.array_equal(problem.rhs, rhs)
    assert np.array_equal(problem.solve(alpha).beta, beta)
    assert np.array_equal(stats.solve(counts[0], m1[0], m2[0], alpha).beta, beta)  # never packed


def test_a_matrix_float32_cannot_factor_falls_back_to_float64(monkeypatch):
    """potrf's failure (info > 0) is a LinAlgError, which sends the fit to the float64 solve."""
    bags, labels, stats = random_statistics()
    counts, m1, m2 = stats.group_sums(list(bags), labels, np.zeros(len(labels), int), 1)
    problem = stats.problem(counts[0], m1[0], m2[0], lambda: (counts[0], m1[0], m2[0]))
    with pytest.raises(linalg.LinAlgError):
        stats.solve_float32(stats.unpack(problem.packed), problem.scale, problem.rhs, -2.0)  # not positive definite
    calls = []
    monkeypatch.setattr(CellStatistics, "solve_float64", lambda self, *a: calls.append(a) or np.zeros(self.dim))
    assert problem.solve(-2.0).beta.shape == (stats.dim,) and len(calls) == 1
    assert stats.solve(counts[0], m1[0], m2[0], -2.0).beta.shape == (stats.dim,) and len(calls) == 2  # solved once
