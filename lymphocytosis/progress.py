"""Progress bars for long steps: one style everywhere, silent when output is not a terminal or with -q.

While a bar shows (inside its `with` block), log lines printed to the terminal go above it (through tqdm.write)
instead of cutting it in two. A bar that resumes work starts at the work already done (`initial`), so its rate
counts only this run's.

LYMPHOCYTOSIS_PROGRESS=always shows them anyway (e.g. in a batch job's log). Whether a run is quiet is the
run's to say: a command hands its `Progress` down to the long steps it starts (see cli/common.py `Run`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass


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


@functools.cache
def _bar_class():
    """tqdm whose `with` block sends the terminal's log lines above the bar while it shows (made once, on first
    use: tqdm is imported only when a long step starts)."""
    from tqdm import tqdm

    class Bar(tqdm):
        def __enter__(self):
            self._logs = contextlib.nullcontext() if self.disable else _logs_above(tqdm)
            self._logs.__enter__()
            return super().__enter__()

        def __exit__(self, *exc):
            try:
                return super().__exit__(*exc)
            finally:
                self._logs.__exit__(None, None, None)

    return Bar


@dataclass(frozen=True)
class Progress:
    """How a run shows its long steps: `quiet` (the commands' -q) shows no bar at all."""

    quiet: bool = False

    def bar(self, **kwargs):
        """A tqdm bar that shows only on a terminal (disable=None) and never when quiet; use it in a `with`."""
        always = os.environ.get("LYMPHOCYTOSIS_PROGRESS") == "always"
        disable = True if self.quiet else False if always else None
        return _bar_class()(disable=disable, dynamic_ncols=True, mininterval=1.0, **kwargs)
