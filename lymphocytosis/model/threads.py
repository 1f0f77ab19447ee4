"""Stage 2 on the machine's cores: independent folds computed in threads, their results used in order.

A fold's work is mostly native code that runs without Python's GIL (the ridge's BLAS/LAPACK calls, see
nogil.py; LightGBM; numpy's large array operations), so two folds in two threads use two cores. Each thread
computes on one BLAS thread and one LightGBM thread: more threads per call on tiny problems only cost.

`LYMPHOCYTOSIS_THREADS` sets how many folds run at once (default: up to 2, never more than the CPUs); 1 computes
them one after the other on the calling thread, as earlier versions did. Results are the same either way: each
fold's computation depends on its own inputs only, and results are delivered in fold order.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import threadpoolctl
from threadpoolctl import threadpool_limits

from ..errors import InputError

log = logging.getLogger(__name__)

ENVIRONMENT = "LYMPHOCYTOSIS_THREADS"
DEFAULT_THREADS = 2  # two folds at once by default: more can be asked for with LYMPHOCYTOSIS_THREADS
T = TypeVar("T")
R = TypeVar("R")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one: a container or `taskset`
    may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def fold_threads(requested: int | None = None) -> int:
    """How many folds to compute at once: `requested`, else $LYMPHOCYTOSIS_THREADS, else min(2, usable CPUs)."""
    if requested is None:
        text = os.environ.get(ENVIRONMENT, "").strip()
        if not text:
            return max(1, min(DEFAULT_THREADS, usable_cpus()))
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"${ENVIRONMENT} = {text!r}: give a whole number of threads, at least 1")
        requested = int(text)
    if requested < 1:
        raise InputError(f"{requested} threads: at least 1")
    return requested


class OneBlasThread:
    """One BLAS thread for the whole process while any caller needs it, set once and restored once.

    threadpoolctl's limits are process-wide: a `threadpool_limits` entered and left inside each of two worker
    threads would restore the former thread count while the other thread still computes. Here the first caller
    in sets the limit and the last one out restores it, whatever the threads' order. (threadpoolctl also lets
    only the first thread that set an OpenBLAS limit change it again, silently ignoring the others; this lock
    orders the changes instead, so control is released around each one.)"""

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._limits = None

    def __enter__(self) -> OneBlasThread:
        with self._lock:
            if self._users == 0:
                self._limits = any_thread(lambda: threadpool_limits(limits=1, user_api="blas"))
            self._users += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                limits, self._limits = self._limits, None
                any_thread(limits.restore_original_limits)

    def __call__(self, function: Callable) -> Callable:
        """As a decorator: `function` runs inside."""
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            with self:
                return function(*args, **kwargs)

        return wrapped


class Busy:
    """How many threads compute an item of `in_order` now, process-wide, and each one's thread budget (the
    `threads` of the `in_order` it serves): what `spare_threads` leaves."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.budget = threading.local()

    def running(self, function: Callable[[T], R], budget: int) -> Callable[[T], R]:
        """`function`, counted while it runs, under `budget` threads."""
        def counted(item: T) -> R:
            with self._lock:
                self.count += 1
            outer, self.budget.threads = getattr(self.budget, "threads", None), budget
            try:
                return function(item)
            finally:
                self.budget.threads = outer
                with self._lock:
                    self.count -= 1

        return counted


busy = Busy()


def spare_threads() -> int:
    """Threads of the budget (the `threads` of the `in_order` this item serves, else fold_threads) that no fold
    computes on now: a CV's last fold, alone, can split its own independent parts over them. 0 while every
    thread is busy: a fold's parts then run one by one. The caller computes too: outside any counted item, it
    is one busy thread."""
    budget = getattr(busy.budget, "threads", None)
    return max(0, (fold_threads() if budget is None else budget) - max(busy.count, 1))


def any_thread(change: Callable[[], R]) -> R:
    """`change()` of threadpoolctl's limits, effective from whichever thread makes it: threadpoolctl (3.8) hands
    control of OpenBLAS's process-wide limit to the first thread that sets it, until that thread clears it, and
    ignores the others; the control is released before and after (OneBlasThread's lock orders the changes)."""
    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    try:
        return change()
    finally:
        if release is not None:
            release(force=True)


one_blas_thread = OneBlasThread()


def in_order(function: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """`function(item)` for each item, yielded in the items' order, up to `threads` computed at once (one: on the
    calling thread, one after the other), on one BLAS thread either way. An item's exception is raised when its
    turn comes, as one after the other would; the items after it are then not started, and those already
    running are waited for.

    Close the iterator (`contextlib.closing`) when stopping early: it cancels what has not started and waits
    for what runs, so no fold computes on behind the caller's back."""
    function = busy.running(function, threads)
    if threads <= 1:
        with one_blas_thread:
            for item in items:
                yield function(item)
        return
    iterator = iter(items)
    with one_blas_thread, ThreadPoolExecutor(threads, thread_name_prefix="lymphocytosis-fold") as pool:
        running: deque[Future] = deque(pool.submit(function, item) for item in itertools.islice(iterator, threads))
        try:
            while running:
                yield running.popleft().result()
                # the next item starts once the caller has taken this result: a caller that stops here (a pruned
                # trial) leaves only the items already running to finish, not one more
                running.extend(pool.submit(function, item) for item in itertools.islice(iterator, 1))
        finally:
            for future in running:
                future.cancel()


def ordered_results(function: Callable[[T], R], items: Iterable[T], threads: int | None = None):
    """`in_order` as a context manager that closes it on leaving: `with ordered_results(f, xs) as results:`.
    `threads` by default: the budget of the item this runs in (threads=1 asked of a CV holds for everything
    in it), else fold_threads()."""
    budget = getattr(busy.budget, "threads", None)
    return contextlib.closing(in_order(function, items, fold_threads(budget if threads is None else threads)))
