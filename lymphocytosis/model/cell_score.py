"""A learned per-cell "tumoral" score: ridge regression of the patient's label on each cell's embedding.

Only the cells' own patients' labels are known, so every cell inherits its patient's label; each patient
weighs the same in the fit (cells weighted 1/n_cells) and each class weighs the same (weighted by the
inverse number of patients of that class). The ridge solution only needs per-patient sums (n, sum x,
sum y x, X^T X), computed once per process, so fitting on any subset of patients -- the many fits of
repeated, nested and cross-fitted CV (cross_fit.py) -- costs a D x D solve, not a pass over the cells.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from ..errors import InputError
from . import nogil
from .threads import one_blas_thread, run_all

log = logging.getLogger(__name__)

# Per-patient Gram matrices are kept when they take at most this much (D(D+1)/2 float32 each: 3.3 MB at D = 1280,
# so about 650 such patients); beyond it, each fit sums its patients' cells, CHUNK_CELLS at a time.
GRAM_BYTES = 2 * 2**30
CHUNK_CELLS = 8192


@dataclass(frozen=True)
class CellScoreWeights:
    """A fitted ridge: a cell's score is `embedding @ beta + intercept` (about 0 reactive-like, 1 tumoral-like)."""

    beta: np.ndarray  # (D,)
    intercept: float

    def score(self, bag: np.ndarray) -> np.ndarray:
        return bag @ self.beta + self.intercept

    def to_dict(self) -> dict:
        return {"beta": self.beta.tolist(), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: dict, where: str = "cell score") -> CellScoreWeights:
        """Weights read back from model.json: `beta` a list of finite numbers, `intercept` a finite number; an
        InputError names `where` and the key otherwise."""
        from .json_values import finite_number, number_array

        if not isinstance(data, dict) or set(data) != {"beta", "intercept"}:
            raise InputError(f"{where} must be an object of beta and intercept")
        return cls(number_array(data["beta"], f"{where}.beta", 1), finite_number(data["intercept"], f"{where}.intercept"))


@dataclass(frozen=True)
class Views:
    """Training views of the cells (augmentation.py), paired row by row with the originals, and the weight of the
    invariance penalty: the ridge then also minimises `weight` x the mean squared change of a cell's score
    between its original and its views, so the score learns to ignore what the views change (acquisition)
    while it learns what tells the classes apart. The penalty joins each patient's Gram matrix, weighted like
    its cells: it costs nothing per fit."""

    bags: dict[str, list[np.ndarray]]  # patient -> one (n_cells, D) array per view, rows as the originals'
    weight: float


class CellStatistics:
    """Per-patient sufficient statistics of the cell embeddings. Gram matrices are symmetric: only one triangle
    is kept, in float32 -- a quarter of the memory and memory traffic of full float64 matrices, which is what the
    weighted sums over patients cost. It is packed row by row from the upper triangle, which is the lower
    triangle column by column: the order in which LAPACK (column-major) reads a lower triangle, so a solve
    writes the sums straight into the matrix it factors, without copy or transposition."""

    def __init__(self, bags: dict[str, np.ndarray], max_bytes: int = GRAM_BYTES, views: Views | None = None):
        self.views = views if views is not None and views.weight > 0 else None
        self.ids = list(bags)
        self.index = {patient_id: i for i, patient_id in enumerate(self.ids)}
        self.dim = next(iter(bags.values())).shape[1]
        self.n = np.array([len(bags[patient_id]) for patient_id in self.ids], dtype=np.float64)
        self.sums = np.zeros((len(self.ids), self.dim))
        for i, patient_id in enumerate(self.ids):
            self.sums[i] = bags[patient_id].astype(np.float32, copy=False).sum(0, dtype=np.float64)
        rows, columns = np.triu_indices(self.dim)
        self.packed = rows * self.dim + columns  # flat positions, in a (dim, dim) C-ordered matrix, of the packing
        gram_bytes = len(self.ids) * len(self.packed) * 4
        self.bags, self.grams = bags, None
        if gram_bytes > max_bytes:
            log.info("cell score: the Gram matrices of %d patients would take %.1f GB (more than %.1f GB): each fit "
                     "sums its patients' cells instead", len(self.ids), gram_bytes / 1e9, max_bytes / 1e9)
            return
        self.grams = np.zeros((len(self.ids), len(self.packed)), dtype=np.float32)
        run_all(self.compute_gram, range(len(self.ids)))  # patients in threads (the products and packing let the GIL go)

    def compute_gram(self, i: int) -> None:
        """Patient i's Gram matrix (with its views' invariance penalty), packed into grams[i]: x.T @ x is exactly
        symmetric (syrk), and its upper triangle row by row is its transpose's (Fortran order) lower triangle
        column by column, which LAPACK's trttp copies (the same numbers as gathering them through `packed`)."""
        x = self.bags[self.ids[i]].astype(np.float32, copy=False)
        if len(x):  # on one BLAS thread: run_all's
            gram = x.T @ x
            for change in self.view_changes(self.ids[i], x):
                gram += change.T @ change
            _, info = nogil.trttp_lower(gram.T, out=self.grams[i])
            if info != 0:
                raise ValueError(f"strttp: illegal argument {-info}")

    def view_changes(self, patient_id: str, x: np.ndarray) -> list[np.ndarray]:
        """Each training view's change of the patient's cells (view - original), scaled so that their Gram matrix,
        added to the cells', is the invariance penalty: weight x the mean over views of the squared change of
        the score. None without views."""
        if self.views is None:
            return []
        views = self.views.bags[patient_id]
        factor = np.float32(np.sqrt(self.views.weight / len(views)))
        return [(view.astype(np.float32, copy=False) - x) * factor for view in views]

    def group_sums(self, ids: list[str], labels: np.ndarray, groups: np.ndarray, n_groups: int):
        """For each (group, class): patient count, sum of per-patient mean x, sum of per-patient mean x x^T
        (packed triangle).

        One pass over the Gram matrices serves every fit on a union of groups (cross-fitting's 6 fits)."""
        weights = np.zeros((n_groups * 2, len(self.ids)))
        for patient_id, label, group in zip(ids, labels, groups):
            row = self.index[patient_id]
            if self.n[row] > 0:
                weights[2 * group + int(label), row] = 1.0 / self.n[row]
        counts = (weights > 0).sum(1).astype(np.float64).reshape(n_groups, 2)
        m1 = (weights @ self.sums).reshape(n_groups, 2, self.dim)
        m2 = self.cell_sums(weights) if self.grams is None else self.gram_sums(weights.astype(np.float32))
        return counts, m1, m2.reshape(n_groups, 2, -1)

    def gram_sums(self, weights: np.ndarray) -> np.ndarray:
        """`weights @ grams` (float32), one saxpy per patient of each group, in patient order: each patient is in one
        group, so the matrix product's (2 x groups) x patients multiply-adds were mostly by 0, and it packed every
        Gram matrix for them -- 4x the time. Each sum is the same chain of fused multiply-adds, in the same order,
        as the product's (OpenBLAS accumulates over patients in order); measured bit-identical to it here. The
        rows are independent parts: a free thread of the CV may sum some (threads.Crew)."""
        m2 = np.zeros((len(weights), self.grams.shape[1]), dtype=np.float32)

        def sum_row(r: int) -> None:
            for i in np.flatnonzero(weights[r]):
                nogil.axpy(weights[r, i], self.grams[i], m2[r])  # in place, without holding the GIL (nogil.py)

        run_all(sum_row, range(len(weights)))
        return m2

    def cell_sums(self, weights: np.ndarray) -> np.ndarray:
        """The weighted sums of x x^T straight from the cells, for Gram matrices over the memory budget: each
        patient's cells scaled by sqrt(weight), CHUNK_CELLS cells at a time multiplied in float32 and summed in
        float64. Memory is bounded by a chunk; time grows with the cells of every fit (the same sums, to float32
        rounding, as through the Gram matrices)."""
        m2 = np.zeros((len(weights), len(self.packed)), dtype=np.float32)
        with one_blas_thread:
            for r, row in enumerate(weights):
                total, chunk, cells = np.zeros((self.dim, self.dim)), [], 0
                members = np.flatnonzero(row)
                for k, i in enumerate(members):
                    x = self.bags[self.ids[i]].astype(np.float32)
                    for rows in [x, *self.view_changes(self.ids[i], x)]:
                        chunk.append(rows * np.float32(np.sqrt(row[i])))
                        cells += len(rows)
                    if cells >= CHUNK_CELLS or k == len(members) - 1:
                        y = np.concatenate(chunk)
                        total += y.T @ y
                        chunk, cells = [], 0
                m2[r] = total.ravel()[self.packed]
        return m2

    def solve(self, counts: np.ndarray, m1: np.ndarray, m2: np.ndarray, alpha: float) -> CellScoreWeights:
        """Weights and intercept of the class- and patient-balanced, standardised ridge from per-class sums, for a
        fit solved with one penalty only (a CV outside tuning): factored where it is standardised, without the
        packing and unpacking of a kept `problem` -- two copies of the matrix and an allocation fewer, the same
        numbers."""
        lower, scale, rhs, mean = self.standardised(counts, m1, m2)
        return self.penalised(lower, scale, rhs, mean, lambda: (counts, m1, m2), alpha)

    def problem(self, counts: np.ndarray, m1: np.ndarray, m2: np.ndarray, sums: Callable[[], tuple]) -> RidgeProblem:
        """Everything of a ridge fit but its penalty, kept packed: a tuner trying several penalties on the same
        training patients reads the Gram matrices and standardises once."""
        lower, scale, rhs, mean = self.standardised(counts, m1, m2)
        packed, info = nogil.trttp_lower(lower)
        if info != 0:
            raise ValueError(f"strttp: illegal argument {-info}")
        return RidgeProblem(self, packed, scale, rhs, mean, sums)

    def standardised(self, counts: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> tuple:
        """The standardised normal equations of a fit, without the penalty: the (dim, dim) Fortran-ordered matrix
        whose lower triangle is the standardised covariance, each dimension's standard deviation, the right-hand
        side (float32) and the mean.

        In float32 (half the memory traffic, twice the Cholesky speed): the standardised matrix has unit
        diagonal plus alpha, so its conditioning is bounded by about D / alpha -- unless a dimension is nearly
        constant, when float32 cancellation noise is magnified by the standardisation (the solve then falls
        back to `solve_float64`: `penalised`). Each entry (i >= j) of the lower triangle is
        ((sum - mean_i mean_j) / scale_i) / scale_j; the upper triangle is not read (nor zeroed)."""
        class_weight = 0.5 / np.maximum(counts, 1.0)  # each class weighs 1/2, each patient of a class the same
        mean = class_weight @ m1
        cov_xy = class_weight[1] * m1[1] - 0.5 * mean
        lower = self.unpack(np.float32(class_weight[0]) * m2[0] + np.float32(class_weight[1]) * m2[1])
        mean32 = mean.astype(np.float32)
        variance = np.diag(lower) - mean32 * mean32  # float32, as the diagonal of the centred matrix below
        scale = np.sqrt(np.clip(variance.astype(np.float64), 1e-12, None))
        standardise(lower, mean32, (1.0 / scale).astype(np.float32))
        return lower, scale, (cov_xy / scale).astype(np.float32), mean

    def penalised(self, lower: np.ndarray, scale: np.ndarray, rhs: np.ndarray, mean: np.ndarray,
                  sums: Callable[[], tuple], alpha: float) -> CellScoreWeights:
        """The ridge with penalty `alpha` on standardised normal equations, factoring `lower` in place (float32;
        float64 from the (counts, m1, m2) that `sums` gives, when float32 cannot factor it: a kept problem
        computes them again rather than keep them)."""
        try:
            beta = self.solve_float32(lower, scale, rhs, alpha)
        except linalg.LinAlgError:
            counts, m1, m2 = sums()
            class_weight = 0.5 / np.maximum(counts, 1.0)
            mean64 = class_weight @ m1
            beta = self.solve_float64(class_weight, mean64, m2, class_weight[1] * m1[1] - 0.5 * mean64, alpha)
        return CellScoreWeights(beta, float(0.5 - mean @ beta))

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """The (dim, dim) Fortran-ordered matrix whose lower triangle is `packed` (LAPACK's tpttr: a copy column by
        column, 8x faster than scattering through an index array); its upper triangle is not read."""
        lower, info = nogil.tpttr_lower(self.dim, packed)
        if info != 0:
            raise ValueError(f"stpttr: illegal argument {-info}")
        return lower

    def solve_float32(self, lower: np.ndarray, scale: np.ndarray, rhs: np.ndarray, alpha: float) -> np.ndarray:
        """One float32 Cholesky factorisation of `lower` plus alpha on its diagonal, in place (LAPACK's potrf and
        potrs, called directly: scipy's cho_factor would first copy the matrix to check it for NaN, which the
        factorisation reports itself; and without holding the GIL, so that folds in other threads compute
        meanwhile, see nogil.py); LinAlgError when float32 cannot factor it."""
        lower[np.diag_indices_from(lower)] += np.float32(alpha)
        info = nogil.potrf_lower(lower)  # in place: lower becomes the factor
        if info != 0 or not np.isfinite(np.diag(lower)).all():  # a NaN reaches the diagonal it propagates to
            raise linalg.LinAlgError(f"float32 Cholesky factorisation failed (potrf info {info})")
        solution, info = nogil.potrs_lower(lower, rhs)
        if info != 0:
            raise ValueError(f"spotrs: illegal argument {-info}")
        return solution.astype(np.float64) / scale

    def solve_float64(self, class_weight, mean, m2, cov_xy, alpha) -> np.ndarray:
        """The fallback: float64, and dimensions whose variance is at rounding level (relative to the largest)
        get weight 0 instead of being standardised into noise."""
        cov = np.zeros((self.dim, self.dim))
        cov.ravel()[self.packed] = class_weight[0] * m2[0].astype(np.float64) + class_weight[1] * m2[1].astype(np.float64)
        cov = np.triu(cov) + np.triu(cov, 1).T
        cov -= np.outer(mean, mean)
        variance = np.diag(cov).copy()
        used = variance > 1e-6 * max(float(variance.max()), 1e-300)
        beta = np.zeros(self.dim)
        if used.any():
            scale = np.sqrt(variance[used])
            standardised = cov[np.ix_(used, used)] / np.outer(scale, scale)
            standardised[np.diag_indices_from(standardised)] += alpha
            beta[used] = linalg.solve(standardised, cov_xy[used] / scale, assume_a="pos") / scale
        log.debug("cell score: float64 solve, %d of %d dimensions used", int(used.sum()), self.dim)
        return beta


STANDARDISE_COLUMNS = 64  # columns standardised at a time: their products (D x 64 float32) stay in cache


def standardise(lower: np.ndarray, mean32: np.ndarray, inverse_scale: np.ndarray) -> None:
    """lower[i, j] = ((lower[i, j] - mean_i mean_j) * inverse_scale_i) * inverse_scale_j for i >= j, in place, in
    float32: a block of columns at a time, in one pass, below the diagonal only but for each block's own square
    (whose upper entries are computed too, and never read). The same three roundings per entry, in the same
    order, as centring the whole matrix by an outer product and scaling it by rows then columns, which wrote and
    read 5 full matrices instead of half of one."""
    dim = len(mean32)
    for start in range(0, dim, STANDARDISE_COLUMNS):
        stop = min(dim, start + STANDARDISE_COLUMNS)
        block = lower[start:, start:stop]  # rows from the block's first column: its lower part
        block -= np.multiply.outer(mean32[start:stop], mean32[start:]).T  # transposed: in block's (Fortran) order
        block *= inverse_scale[start:, None]  # by scale_i first
        block *= inverse_scale[None, start:stop]


@dataclass(frozen=True)
class RidgeProblem:
    """One ridge fit's standardised normal equations, without the penalty (CellStatistics.problem)."""

    statistics: CellStatistics = field(repr=False)
    packed: np.ndarray  # float32: the standardised covariance's lower triangle, column by column
    scale: np.ndarray  # (dim,) each dimension's standard deviation
    rhs: np.ndarray  # float32 (dim,) standardised covariance of x and the label
    mean: np.ndarray  # (dim,)
    sums: Callable[[], tuple] = field(repr=False)  # its (counts, m1, m2) again, for solve_float64

    @property
    def nbytes(self) -> int:
        """What keeping it costs: the packed triangle, mostly."""
        return self.packed.nbytes + self.scale.nbytes + self.rhs.nbytes + self.mean.nbytes

    def solve(self, alpha: float) -> CellScoreWeights:
        """The ridge with penalty `alpha` on the standardised embeddings (on an unpacked copy: kept for others)."""
        return self.statistics.penalised(self.statistics.unpack(self.packed), self.scale, self.rhs, self.mean,
                                         self.sums, alpha)
