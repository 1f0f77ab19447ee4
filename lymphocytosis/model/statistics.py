"""Bag statistics by name: how a patient's many cells become a few numbers."""

from __future__ import annotations

import threading
import warnings

import numpy as np

from ..errors import InputError


def percentile_of(name: str) -> int | None:
    """NN of a statistic named qNN (0-100), else None."""
    if name.startswith("q") and name[1:].isdigit() and 0 <= int(name[1:]) <= 100:
        return int(name[1:])
    return None


def statistic_function(name: str):
    """A bag statistic by name: mean, std, min, max, qNN (NN-th percentile), topNN (mean of the top NN%)."""
    if name in {"mean", "std", "min", "max"}:
        return getattr(np, name)
    q = percentile_of(name)
    if q is not None:
        return lambda x, axis: np.percentile(x, q, axis=axis)
    if name.startswith("top") and name[3:].isdigit() and 0 < int(name[3:]) <= 100:
        fraction = int(name[3:]) / 100

        def top_mean(x, axis):
            k = max(1, int(round(fraction * x.shape[axis])))
            return np.mean(-np.sort(-x, axis=axis).take(np.arange(k), axis=axis), axis=axis)

        return top_mean
    raise InputError(f"unknown bag statistic {name!r} (mean, std, min, max, qNN, topNN)")


def bag_statistics(bag: np.ndarray, stats: tuple[str, ...], dim: int, lookup=statistic_function) -> np.ndarray:
    """(len(stats) * dim,) statistics of one bag (n_cells, dim), statistic-major; NaN when the bag is empty.
    `lookup`: statistic_function, or nan_statistic_function for measured quantities.

    With statistic_function, every qNN comes from one np.percentile call (one partition of the bag for all of
    them): each percentile is the same interpolation between the same two order statistics as in a call of
    its own, so the same bits, in a fraction of the time."""
    if len(bag) == 0:
        return np.full(len(stats) * dim, np.nan)
    bag = bag.reshape(len(bag), dim)
    percentiles = {}
    if lookup is statistic_function:
        wanted = sorted({q for q in map(percentile_of, stats) if q is not None})
        if len(wanted) > 1:
            percentiles = dict(zip(wanted, np.percentile(bag, wanted, axis=0)))
    shared = [percentiles.get(percentile_of(s)) for s in stats]
    return np.concatenate([np.asarray(lookup(s)(bag, axis=0) if value is None else value, dtype=np.float64)
                           for s, value in zip(stats, shared)])


NAN_STATISTICS = {"mean": np.nanmean, "std": np.nanstd, "min": np.nanmin, "max": np.nanmax}
# warnings.catch_warnings changes the process's warning filters: two threads inside it at once could leave
# "ignore" in force, or restore it while the other still needs it.
WARNINGS_LOCK = threading.Lock()


def nan_statistic_function(name: str):
    """A statistic by name that ignores NaN (mean, std, min, max, qNN): for measured quantities, where a cell whose
    nucleus was not found is missing, not zero. NaN where a column has no value."""
    if name in NAN_STATISTICS:
        function = NAN_STATISTICS[name]
    elif name.startswith("q") and name[1:].isdigit() and 0 <= int(name[1:]) <= 100:
        q = int(name[1:])

        def function(x, axis):
            return np.nanpercentile(x, q, axis=axis)
    else:
        raise InputError(f"unknown measurement statistic {name!r} (mean, std, min, max, qNN)")

    def quiet(x, axis):
        with WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: NaN is the answer
            return function(x, axis=axis)

    return quiet
