"""Folds computed in threads give the serial results: the GIL-free BLAS/LAPACK calls are scipy's own bits and
let other threads run; a CV on two threads equals the CV on one (probabilities, the order and values of the
per-fold callbacks, a pruned CV's reports, a failing fold's error); one BLAS thread is set once for the whole
process and restored; the memo survives concurrent use; the batched percentiles are the separate ones.

Small random data and the fake 24-patient embeddings: a few seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from scipy.linalg import blas, lapack
from threadpoolctl import threadpool_info

from conftest import SMALL
from lymphocytosis.errors import InputError
from lymphocytosis.model import evaluation, nogil, threads
from lymphocytosis.model.cell_score import CellStatistics
from lymphocytosis.model.cohort import FitMemo, load_cohort
from lymphocytosis.model.cross_fit import cross_fit_problems, cross_fitted_scores, solve_cross_fit
from lymphocytosis.model.evaluation import cross_validate, repeated_folds
from lymphocytosis.model.params import DEFAULT_PARAMS
from lymphocytosis.model.statistics import bag_statistics, statistic_function
from lymphocytosis.model.tuned_params import Settings


def spd(n: int, seed: int, definite: bool = True) -> np.ndarray:
    """A symmetric float32 matrix, Fortran-ordered: positive definite, or with a negative pivot."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 5, n)).astype(np.float32)
    a = x.T @ x / np.float32(n) + np.eye(n, dtype=np.float32) * (1 if definite else -50)
    return np.asfortranarray(a)


def test_the_exported_routines_are_found():
    """On this scipy every routine is called GIL-free: a fallback to scipy's wrappers would lose the overlap."""
    assert all(function is not None for function in nogil.FUNCTIONS.values()), nogil.FUNCTIONS


@pytest.mark.parametrize("n", [1, 7, 130, 700])  # 700: LAPACK's blocked path, as at D = 1,280
@pytest.mark.parametrize("seed", range(3))
def test_gil_free_routines_give_scipys_bits(n, seed):
    a, rhs = spd(n, seed), np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    expected, info = lapack.spotrf(a.copy(order="F"), lower=1, overwrite_a=1, clean=0)
    factor = a.copy(order="F")
    assert nogil.potrf_lower(factor) == info == 0 and np.array_equal(factor, expected)
    solution, info = nogil.potrs_lower(factor, rhs)
    assert info == 0 and np.array_equal(solution, lapack.spotrs(expected, rhs, lower=1)[0])
    packed, info = nogil.trttp_lower(a)
    assert info == 0 and np.array_equal(packed, lapack.strttp(a, uplo="L")[0])
    matrix, info = nogil.tpttr_lower(n, packed)
    assert info == 0 and matrix.flags.f_contiguous and np.array_equal(matrix, lapack.stpttr(n, packed, uplo="L")[0])
    y, x = packed.copy(), np.random.default_rng(seed + 10).standard_normal(len(packed)).astype(np.float32)
    nogil.axpy(np.float32(0.37), x, y)
    assert np.array_equal(y, blas.saxpy(x, packed.copy(), a=np.float32(0.37)))


def test_a_failed_factorisation_reports_scipys_info():
    a = spd(20, 0, definite=False)
    _, info = lapack.spotrf(a.copy(order="F"), lower=1, overwrite_a=1, clean=0)
    assert info > 0 and nogil.potrf_lower(a.copy(order="F")) == info


def test_arguments_a_pointer_would_misread_are_refused():
    a = spd(8, 0)
    for wrong in (np.ascontiguousarray(a[:, :7]), a.astype(np.float64), np.ascontiguousarray(a).T.copy(order="C")):
        with pytest.raises(ValueError):
            nogil.potrf_lower(wrong)
    with pytest.raises(ValueError):
        nogil.axpy(np.float32(1), np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        nogil.tpttr_lower(8, np.zeros(35, np.float32))


def woken_before_done(call) -> bool:
    """Whether the main thread, asleep for 1 ms while `call` runs in another thread, woke before it finished: it
    cannot while the call holds the GIL (the other thread records its end before letting the GIL go)."""
    started, done = threading.Event(), []
    worker = threading.Thread(target=lambda: (started.set(), call(), done.append(time.perf_counter())))
    worker.start()
    started.wait()
    time.sleep(0.001)
    woken = time.perf_counter()
    worker.join()
    return woken < done[0]


def test_the_factorisation_lets_other_threads_run():
    """The main thread runs during a long GIL-free factorisation, not during scipy's wrapper's (the control;
    both factor in place a copy made beforehand: numpy lets the GIL go while it copies)."""
    a = np.asfortranarray(np.eye(1800, dtype=np.float32) * 2 + np.float32(1e-3))  # about 0.1 s to factor
    # On a busy machine the other thread may be scheduled only after the main one wakes (then even the wrapper's
    # call looks GIL-free), or the main one only after the call ends: each side is given three tries.
    copies = [a.copy(order="F") for _ in range(6)]
    with threads.one_blas_thread:
        assert any(not woken_before_done(lambda m=m: lapack.spotrf(m, lower=1, overwrite_a=1, clean=0))
                   for m in copies[:3])
        assert any(woken_before_done(lambda m=m: nogil.potrf_lower(m)) for m in copies[3:])


def blas_threads() -> list[int]:
    return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"]


def test_one_blas_thread_is_set_once_for_all_threads_and_restored():
    """Entered and left by two threads in overlapping order, the limit stays 1 until the last one leaves."""
    before = blas_threads()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with threads.one_blas_thread:
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with threads.one_blas_thread:
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = blas_threads()

    workers = [threading.Thread(target=first), threading.Thread(target=second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert seen["after the first left"] == [1] * len(before)
    assert blas_threads() == before


@pytest.mark.parametrize("text, expected", [("1", 1), ("3", 3), (" 2 ", 2)])
def test_the_environment_sets_the_fold_threads(monkeypatch, text, expected):
    monkeypatch.setenv(threads.ENVIRONMENT, text)
    assert threads.fold_threads() == expected


def test_default_and_bad_fold_threads(monkeypatch):
    monkeypatch.delenv(threads.ENVIRONMENT, raising=False)
    assert threads.fold_threads() == max(1, min(2, threads.usable_cpus()))
    monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
    assert threads.fold_threads() == 1  # one CPU allowed: one fold at a time
    assert threads.fold_threads(1) == 1
    for text in ("0", "two", "-1"):
        monkeypatch.setenv(threads.ENVIRONMENT, text)
        with pytest.raises(InputError, match=threads.ENVIRONMENT):
            threads.fold_threads()


@pytest.fixture(scope="module")
def design(fake_embeddings):
    ids = load_cohort(fake_embeddings).labelled_ids
    cohort = load_cohort(fake_embeddings)
    return Settings().spec, {**DEFAULT_PARAMS, **SMALL}, repeated_folds(ids, cohort.labels(ids), 3, 2, 0)


def run_cv(embeddings, design, n_threads: int, stop_at: int | None = None):
    """A CV on a fresh cohort (nothing remembered from another run), its per-fold calls, and what it raised."""
    spec, params, folds = design
    calls = []

    def on_fold(step, result):
        calls.append((step, result.fold, result.prediction.probabilities.tolist()))
        if step == stop_at:
            raise RuntimeError(f"stopped at step {step}")

    try:
        return cross_validate(load_cohort(embeddings), spec, params, folds, on_fold=on_fold, threads=n_threads), calls, None
    except RuntimeError as exc:
        return None, calls, exc


PCA_SPEC = replace(Settings().spec, embedding_stats=("mean", "q50"), embedding_pca=2)  # PCA: BLAS-thread sensitive


@pytest.mark.parametrize("spec", [None, PCA_SPEC], ids=["default", "pca"])
def test_a_cv_on_two_threads_is_the_cv_on_one(fake_embeddings, design, spec):
    design = (spec or design[0], *design[1:])
    serial, serial_calls, _ = run_cv(fake_embeddings, design, 1)
    parallel, parallel_calls, _ = run_cv(fake_embeddings, design, 2)
    assert np.array_equal(serial.probabilities, parallel.probabilities) and not np.isnan(serial.probabilities).any()
    assert [c[0] for c in parallel_calls] == list(range(len(design[2])))
    assert parallel_calls == serial_calls
    assert [r.fold for r in parallel.folds] == design[2]


def test_a_cv_stopped_by_its_callback_reports_what_the_serial_one_does(fake_embeddings, design, monkeypatch):
    """A pruned trial: the same reports, the same exception, no fold left computing after it, and only the fold
    already running when it stopped computed beyond it."""
    started = []
    fit_fold = evaluation.fit_fold
    monkeypatch.setattr(evaluation, "fit_fold", lambda *args: started.append(args[3]) or fit_fold(*args))
    _, serial_calls, serial_error = run_cv(fake_embeddings, design, 1, stop_at=2)
    assert len(started) == 3
    started.clear()
    _, parallel_calls, parallel_error = run_cv(fake_embeddings, design, 2, stop_at=2)
    assert sorted(started, key=design[2].index) == design[2][:4]  # two threads: their starts in either order
    assert parallel_calls == serial_calls and len(serial_calls) == 3
    assert str(parallel_error) == str(serial_error) == "stopped at step 2"
    assert not [t for t in threading.enumerate() if t.name.startswith("lymphocytosis-fold")]


@pytest.mark.parametrize("failing", [0, 3])
def test_a_failing_fold_raises_the_serial_error(fake_embeddings, design, monkeypatch, failing):
    fit_fold = evaluation.fit_fold

    def failing_fit(cohort, spec, params, fold, keep_model):
        if design[2].index(fold) == failing:
            raise InputError(f"fold {fold.repeat}.{fold.fold} failed")
        return fit_fold(cohort, spec, params, fold, keep_model)

    monkeypatch.setattr(evaluation, "fit_fold", failing_fit)
    outcomes = []
    for n_threads in (1, 2):
        calls = []
        with pytest.raises(InputError) as error:
            cross_validate(load_cohort(fake_embeddings), *design, on_fold=lambda s, r, calls=calls: calls.append(s),
                           threads=n_threads)
        outcomes.append((str(error.value), calls))
    assert outcomes[0] == outcomes[1] and outcomes[0][1] == list(range(failing))


def test_gram_matrices_computed_in_threads_are_the_gathered_products():
    """Each patient's packed Gram matrix (threads, LAPACK's packing) against the product gathered by index."""
    rng = np.random.default_rng(0)
    bags = {f"P{i}": rng.standard_normal((int(rng.integers(0, 9)), 12)).astype(np.float32) for i in range(30)}
    stats = CellStatistics(bags)
    for i, bag in enumerate(bags.values()):
        expected = np.take((bag.T @ bag).ravel(), stats.packed) if len(bag) else np.zeros(len(stats.packed))
        assert np.array_equal(stats.grams[i], expected.astype(np.float32))


def test_a_free_thread_helps_a_running_fold_with_its_parts():
    """Item 1 ends while item 0 still runs: its thread, with no item left to start, takes the last of item 0's
    parts (the owner computes them from the first); the parts' results come in order all the same."""
    second_done, last_part_started = threading.Event(), threading.Event()
    ran_on = {}

    def part(k):
        ran_on[k] = threading.current_thread().name
        if k == 3:
            last_part_started.set()
        if k == 0:
            assert last_part_started.wait(10)  # the owner is still on its first part when the helper takes the last
        return k * k

    def item(i):
        if i == 1:
            second_done.set()
            return "second"
        assert second_done.wait(10)
        with threads.ordered_results(part, range(4)) as parts:
            return list(parts)

    with threads.ordered_results(item, range(2), threads=2) as results:
        assert list(results) == [[0, 1, 4, 9], "second"]
    assert ran_on[3] != ran_on[0] and set(ran_on) == {0, 1, 2, 3}
    assert not [t for t in threading.enumerate() if t.name.startswith("lymphocytosis-fold")]


def test_a_failing_part_raises_in_its_turn_and_stops_the_rest():
    """As one after the other: the parts before it delivered, then its error raised; parts no thread had started
    are dropped, and none runs on after it (a free thread may have started some of the last ones meanwhile)."""
    started, delivered = [], []

    def part(k):
        started.append(k)
        if k == 1:
            raise InputError("part 1 failed")
        time.sleep(0.01 if k else 0)  # the helper's parts take a while: the error comes before it took them all
        return k

    def item(i):
        with threads.ordered_results(part, range(40)) as parts:
            for value in parts:
                delivered.append(value)

    with pytest.raises(InputError, match="part 1 failed"), threads.ordered_results(item, [0], threads=2) as results:
        list(results)
    assert delivered == [0] and {0, 1} <= set(started) and len(started) < 40
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count and not [t for t in threading.enumerate() if t.name.startswith("lymphocytosis-fold")]


def test_one_thread_asked_is_one_thread_throughout(fake_embeddings, design, monkeypatch):
    """cross_validate(threads=1) starts no thread at all, not even for a fold's independent parts."""
    pools = []
    monkeypatch.setattr(threads, "Crew", lambda *args, **kwargs: pools.append(args) or 1 / 0)
    monkeypatch.setenv(threads.ENVIRONMENT, "2")
    result = cross_validate(load_cohort(fake_embeddings), *design, threads=1)
    assert not pools and not np.isnan(result.probabilities).any()


def solved_once(stats, bags, labels, alpha):
    return cross_fitted_scores(stats, bags, list(bags), labels, alpha, 5, 0)


def from_kept_problems(stats, bags, labels, alpha):
    return solve_cross_fit(cross_fit_problems(stats, list(bags), labels, 5, 0), bags, alpha)


@pytest.mark.parametrize("budget", ["1", "2", "3"])
@pytest.mark.parametrize("cross_fit", [solved_once, from_kept_problems], ids=["solved once", "kept problems"])
def test_a_cross_fit_on_several_threads_is_the_one_by_one_cross_fit(monkeypatch, budget, cross_fit):
    """A cross-fit splits its independent fits (sums, problems, solves, scoring) over the threads it is given,
    whether each fit is solved once (a CV) or its problem kept (tuning): same bits."""
    rng = np.random.default_rng(1)
    labels = np.arange(40) % 2
    bags = {f"P{i}": (rng.standard_normal((int(rng.integers(1, 9)), 10)) + labels[i]).astype(np.float32)
            for i in range(40)}
    stats = CellStatistics(bags)
    monkeypatch.setenv(threads.ENVIRONMENT, "1")
    expected = solved_once(stats, bags, labels, 0.3)
    monkeypatch.setenv(threads.ENVIRONMENT, budget)
    found = cross_fit(stats, bags, labels, 0.3)
    assert np.array_equal(found.weights.beta, expected.weights.beta)
    assert found.weights.intercept == expected.weights.intercept
    assert all(np.array_equal(found.scores[p], expected.scores[p]) for p in bags) and len(found.scores) == 40


def test_the_memo_survives_concurrent_use():
    """Threads sharing a byte-bounded memo: each key's value is the first one kept, the bound holds."""
    memo = FitMemo(capacity=50, max_bytes=40 * 8)

    def work(offset):
        for k in range(300):
            key = (k + offset) % 80
            value = memo.get(key, lambda key=key: np.full(1, key, dtype=np.float64))
            assert value[0] == key

    workers = [threading.Thread(target=work, args=(offset,)) for offset in (0, 7, 13, 29)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert memo.nbytes <= 40 * 8 and len(memo._items) <= 40


def test_batched_percentiles_are_the_separate_ones():
    rng = np.random.default_rng(0)
    stats = ("mean", "q90", "std", "q10", "q25", "q50", "q75", "top10", "q90", "max")
    for _ in range(200):
        n, dim = int(rng.integers(1, 60)), int(rng.choice([1, 3]))
        bag = rng.standard_normal((n, dim)) * rng.choice([1e-3, 1.0, 1e4]) + rng.integers(0, 3, (n, dim))
        separate = np.concatenate([np.asarray(statistic_function(s)(bag, axis=0), dtype=np.float64) for s in stats])
        assert np.array_equal(bag_statistics(bag, stats, dim), separate)
