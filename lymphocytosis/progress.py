"""Progress bars for long steps: one style everywhere, silent when output is not a terminal or with -q.

While a bar shows, log lines printed to the terminal go above it (through tqdm.write) instead of cutting it in
two. A bar that resumes work starts at the work already done (`initial`), so its rate counts only this run's.

LYMPHOCYTOSIS_PROGRESS=always shows them anyway (e.g. in a batch job's log)."""

from __future__ import annotations

import contextlib
import logging
import os

QUIET = False  # set by the commands' -q


class _AboveTheBar:
    """A terminal stream for log handlers while a bar shows: each line is written above the bar."""

    def __init__(self, stream, tqdm_class):
        self.stream, self.tqdm = stream, tqdm_class

    def write(self, text: str) -> None:
        if text.strip():
            self.tqdm.write(text.rstrip("\n"), file=self.stream)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def _logs_above(tqdm_class):
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]  # not file handlers
    saved = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = _AboveTheBar(handler.stream, tqdm_class)
    try:
        yield
    finally:
        for handler, stream in zip(handlers, saved):
            handler.stream = stream


@contextlib.contextmanager
def bar(**kwargs):
    """A tqdm bar that shows only on a terminal (disable=None) and never with -q."""
    from tqdm import tqdm  # imported when a long step starts: `--help` and `--version` stay instant

    disable = True if QUIET else False if os.environ.get("LYMPHOCYTOSIS_PROGRESS") == "always" else None
    with contextlib.ExitStack() as stack:
        shown = stack.enter_context(tqdm(disable=disable, dynamic_ncols=True, mininterval=1.0, **kwargs))
        if not shown.disable:
            stack.enter_context(_logs_above(tqdm))
        yield shown
