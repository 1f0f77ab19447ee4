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
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import threadpoolctl
from threadpoolctl import threadpool_limits

from ..errors import InputError

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


class Context(threading.local):
    """What the thread computes for: the crew it belongs to (None outside one), and outside a crew the thread
    budget of the one-thread `in_order` whose item it runs (None outside any)."""

    crew: Crew | None = None
    threads: int | None = None


context = Context()
WAITING, RUNNING, DONE, CANCELLED = "waiting", "running", "done", "cancelled"


class Task:
    """One call of `function(item)`, run by whichever thread claims it first (under its crew's lock); its
    outcome, value or exception, is read by whoever needs it."""

    def __init__(self, function: Callable[[T], R], item: T):
        self.function, self.item = function, item
        self.state = WAITING
        self.finished = threading.Event()
        self.value: R | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.function(self.item)
        except BaseException as exc:  # raised to the owner when it reads the outcome, as a serial run would
            self.error = exc
        finally:
            self.state = DONE
            self.finished.set()

    def outcome(self) -> R:
        self.finished.wait()
        if self.error is not None:
            raise self.error
        return self.value


class Crew:
    """The threads of one `in_order`. They start its items; a thread with no item to start helps the items that
    are running, by computing the independent parts they hand out (`ordered_results` inside an item).

    An item computes its own parts in order, from the first; a helper takes the last one still waiting, of the
    earliest item that has some. So a fold whose partner has finished (the last fold of a CV, or one whose
    predecessor is still running when it ends) gets the idle thread's help, and two busy threads never wait
    for each other. Helping changes who computes a part, never what it computes: parts are independent."""

    def __init__(self, threads: int):
        self._changed = threading.Condition()
        self._items: deque[Task] = deque()
        self._parts: list[deque[Task]] = []  # each item's handed-out parts, in the order they were handed out
        self._closing = False
        self._workers = [threading.Thread(target=self._work, name=f"lymphocytosis-fold_{k}", daemon=True)
                         for k in range(threads)]
        for worker in self._workers:
            worker.start()

    def start(self, function: Callable[[T], R], item: T) -> Task:
        """An item, started by the first thread free."""
        task = Task(function, item)
        with self._changed:
            self._items.append(task)
            self._changed.notify()
        return task

    @staticmethod
    def _take(task: Task) -> bool:
        """Under the lock: claims `task` if nobody has (it is still waiting)."""
        if task.state != WAITING:
            return False
        task.state = RUNNING
        return True

    def _next(self) -> Task | None:
        """Under the lock: the part or item a free thread computes next (claimed), or None."""
        while self._parts:
            parts = self._parts[0]
            while parts:
                task = parts.pop()
                if self._take(task):
                    return task
            self._parts.pop(0)
        while self._items:
            task = self._items.popleft()
            if self._take(task):
                return task
        return None

    def _work(self) -> None:
        context.crew = self
        while True:
            with self._changed:
                task = self._next()
                while task is None and not self._closing:
                    self._changed.wait()
                    task = self._next()
            if task is None:
                return
            task.run()

    def claim(self, task: Task) -> bool:
        """Whether the caller may run `task` itself (nobody took it)."""
        with self._changed:
            return self._take(task)

    def shared(self, function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`function(item)` for each item, yielded in order: the calling item computes them one by one, the crew's
        free threads take some from the end. An exception is raised in its turn; on leaving, parts not started
        are dropped and those running waited for."""
        tasks = [Task(function, item) for item in items]
        waiting = deque(tasks)
        with self._changed:
            self._parts.append(waiting)
            self._changed.notify_all()
        try:
            for task in tasks:
                if self.claim(task):
                    task.run()
                yield task.outcome()
        finally:
            self.cancel(tasks)
            with self._changed:
                if waiting in self._parts:
                    self._parts.remove(waiting)

    def cancel(self, tasks: Iterable[Task]) -> None:
        """Tasks not started are dropped; those running are waited for."""
        tasks = list(tasks)
        with self._changed:
            for task in tasks:
                if task.state == WAITING:
                    task.state = CANCELLED
        for task in tasks:
            if task.state != CANCELLED:
                task.finished.wait()

    def close(self, running: Iterable[Task]) -> None:
        """Drop the items not started, wait for those running, and let the threads end."""
        self.cancel(running)
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for worker in self._workers:
            worker.join()


def budgeted(function: Callable[[T], R], threads: int) -> Callable[[T], R]:
    """`function`, run with `threads` as the budget of what it computes in turn (ordered_results' default)."""
    def run(item: T) -> R:
        outer, context.threads = context.threads, threads
        try:
            return function(item)
        finally:
            context.threads = outer

    return run


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


def in_order(function: Callable[[T], R], items: Iterable[T], threads: int, ahead: int = 0) -> Iterator[R]:
    """`function(item)` for each item, yielded in the items' order, up to `threads` computed at once by a `Crew`
    (one: on the calling thread, one after the other), on one BLAS thread either way. An item's exception is
    raised when its turn comes, as one after the other would; the items after it are then not started, and those
    already running are waited for.

    Items start as the caller takes results: `threads` + `ahead` of them not yet taken at most. With `ahead` 0, a
    caller that stops early (a pruned trial) leaves only the items already running to finish; 1 lets a thread
    that finished an item before the one the caller waits for start the next one instead of idling.

    Close the iterator (`contextlib.closing`) when stopping early: it drops what has not started and waits
    for what runs, so no fold computes on behind the caller's back."""
    if threads <= 1:
        function = budgeted(function, threads)
        with one_blas_thread:
            for item in items:
                yield function(item)
        return
    iterator = iter(items)
    with one_blas_thread:
        crew = Crew(threads)
        running: deque[Task] = deque(crew.start(function, item) for item in itertools.islice(iterator, threads + ahead))
        try:
            while running:
                yield running.popleft().outcome()
                # the next item starts once the caller has taken this result
                running.extend(crew.start(function, item) for item in itertools.islice(iterator, 1))
        finally:
            crew.close(running)


def ordered_results(function: Callable[[T], R], items: Iterable[T], threads: int | None = None, ahead: int = 0):
    """`in_order` as a context manager that closes it on leaving: `with ordered_results(f, xs) as results:`.

    By default (`threads` None), inside an item of a crew the items are that item's parts, shared with the crew's
    free threads (`Crew.shared`); inside an item of a one-thread `in_order` they are computed one by one (a
    CV asked for one thread uses one throughout); elsewhere on fold_threads() threads."""
    if threads is None and context.crew is not None:
        return contextlib.closing(context.crew.shared(function, items))
    budget = fold_threads(context.threads if threads is None else threads)
    return contextlib.closing(in_order(function, items, budget, ahead))


def run_all(function: Callable[[T], object], items: Iterable[T], threads: int | None = None) -> None:
    """`function(item)` for every item, for what it does, as `ordered_results` computes them (an exception in
    its turn)."""
    with ordered_results(function, items, threads) as results:
        for _ in results:
            pass
