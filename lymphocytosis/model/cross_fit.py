"""Cross-fitting the cell score: a training patient's cells are scored by a ridge fitted without that patient
(inner folds), so the scores the downstream classifier learns from look like those it will see on new patients;
new patients are scored by the ridge fitted on all training patients.

Each fit's sums come from one pass over the training patients' Gram matrices (cell_score.CellStatistics). A
CV solves each fit once, where it is standardised; tuning keeps the standardised problems and solves them again
for each penalty it tries (the same numbers either way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from .cell_score import CellScoreWeights, CellStatistics, RidgeProblem
from .threads import one_blas_thread, ordered_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossFit:
    """Training patients' out-of-inner-fold cell scores, and the ridge fitted on all of them (for new patients)."""

    scores: dict[str, np.ndarray]
    weights: CellScoreWeights


def stratified_groups(labels: np.ndarray, n_groups: int, seed: int) -> np.ndarray:
    """A deterministic stratified assignment of patients to `n_groups` folds."""
    rng = np.random.default_rng(seed)
    groups = np.empty(len(labels), dtype=int)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        members = members[rng.permutation(len(members))]
        offset = rng.integers(n_groups)
        groups[members] = (np.arange(len(members)) + offset) % n_groups
    return groups


@dataclass(frozen=True)
class InnerFolds:
    """A cross-fit's training patients and their inner folds: the fit on all of them (`None`) and one without each
    inner fold; no inner fold when a class has too few patients to cross-fit."""

    train_ids: list[str]
    labels: np.ndarray
    groups: np.ndarray  # each training patient's inner fold
    count: int  # of inner folds: 0 when the training patients are scored in-sample

    @classmethod
    def of(cls, train_ids: list[str], train_labels: np.ndarray, inner_folds: int, seed: int) -> InnerFolds:
        train_ids, train_labels = list(train_ids), np.asarray(train_labels)
        # Every inner fit needs patients of both classes: at most as many inner folds as the smaller class has patients.
        inner_folds = min(inner_folds, int(np.bincount(train_labels, minlength=2).min()))
        if inner_folds < 2:
            log.warning("cell score: too few patients of one class to cross-fit; training patients are scored in-sample")
            return cls(train_ids, train_labels, np.zeros(len(train_ids), int), 0)
        return cls(train_ids, train_labels, stratified_groups(train_labels, inner_folds, seed), inner_folds)

    @property
    def fits(self) -> list[int | None]:
        return [None, *range(self.count)]

    def sums_of_fits(self, stats: CellStatistics) -> Callable[[int | None], tuple]:
        """One pass over the training patients' Gram matrices, and the function giving the (counts, m1, m2) of each
        fit from it: `None` the fit on all, `g` the fit without inner fold g."""
        counts, m1, m2 = stats.group_sums(self.train_ids, self.labels, self.groups, max(self.count, 1))
        total = counts.sum(0), m1.sum(0), m2.sum(0)

        def of(group: int | None) -> tuple:
            return total if group is None else (total[0] - counts[group], total[1] - m1[group], total[2] - m2[group])

        return of

    def sums_again(self, stats: CellStatistics, group: int | None) -> tuple:
        """One fit's sums from a new pass: what the float64 fallback of a kept problem reads, so that the problem
        does not keep every fit's sums alive."""
        return self.sums_of_fits(stats)(group)


@dataclass(frozen=True)
class CrossFitProblems:
    """A cross-fit's ridge problems, penalty aside: the fit on all training patients, and one without each inner
    fold. What tuning keeps and reuses across penalties."""

    folds: InnerFolds
    total: RidgeProblem
    inner: list[RidgeProblem]

    @property
    def nbytes(self) -> int:
        return sum(problem.nbytes for problem in [self.total, *self.inner])


@one_blas_thread
def cross_fit_problems(stats: CellStatistics, train_ids: list[str], train_labels: np.ndarray, inner_folds: int,
                       seed: int) -> CrossFitProblems:
    """One pass over the training patients' Gram matrices, standardised into the 1 + `inner_folds` problems
    (independent parts: a free thread of the CV may build some, threads.Crew)."""
    folds = InnerFolds.of(train_ids, train_labels, inner_folds, seed)
    sums_of = folds.sums_of_fits(stats)
    with ordered_results(lambda g: stats.problem(*sums_of(g), partial(folds.sums_again, stats, g)), folds.fits) as built:
        total, *inner = built
    return CrossFitProblems(folds, total, inner)


@one_blas_thread
def solve_cross_fit(problems: CrossFitProblems, bags: dict[str, np.ndarray], alpha: float) -> CrossFit:
    """The cross-fit of kept problems with penalty `alpha` (cross_fit)."""
    return cross_fit(problems.folds, lambda g: (problems.total if g is None else problems.inner[g]).solve(alpha), bags)


@one_blas_thread
def cross_fitted_scores(stats: CellStatistics, bags: dict[str, np.ndarray], train_ids: list[str],
                        train_labels: np.ndarray, alpha: float, inner_folds: int, seed: int) -> CrossFit:
    """The cross-fit of these training patients with one penalty: each fit is standardised and solved at once,
    in place (CellStatistics.solve), nothing kept -- the same numbers as cross_fit_problems then
    solve_cross_fit, which tuning uses to try several penalties on the same patients."""
    folds = InnerFolds.of(train_ids, train_labels, inner_folds, seed)
    sums_of = folds.sums_of_fits(stats)
    return cross_fit(folds, lambda g: stats.solve(*sums_of(g), alpha), bags)


def cross_fit(folds: InnerFolds, weights_of: Callable[[int | None], CellScoreWeights],
              bags: dict[str, np.ndarray]) -> CrossFit:
    """Out-of-inner-fold per-cell scores of the training patients, and the fit on all of them (for others), from
    `weights_of(fit)`.

    On one BLAS thread (the callers'): these D x D solves are small, and with two threads on two busy cores
    OpenBLAS was measured 40x slower (2.7 s against 0.07 s per solve), with identical results. Each inner fit,
    with the scoring of its held-out patients, is an independent part: a free thread of the CV may compute some."""
    members = np.asarray(folds.train_ids)

    def solve(g: int | None) -> tuple[CellScoreWeights, dict[str, np.ndarray]]:
        weights = weights_of(g)
        if g is None:
            return weights, {}
        return weights, {patient_id: weights.score(bags[patient_id]) for patient_id in members[folds.groups == g]}

    with ordered_results(solve, folds.fits) as solved:
        (weights, _), *inner = solved
    if not inner:
        return CrossFit({patient_id: weights.score(bags[patient_id]) for patient_id in folds.train_ids}, weights)
    scores = {}
    for _, group_scores in inner:
        scores.update(group_scores)
    return CrossFit(scores, weights)
