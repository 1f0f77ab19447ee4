"""Progress bars for long steps: one style everywhere, silent when output is not a terminal or with -q.

LYMPHOCYTOSIS_PROGRESS=always shows them anyway (e.g. in a batch job's log)."""

from __future__ import annotations

import os

QUIET = False  # set by the commands' -q


def bar(**kwargs):
    """A tqdm bar that shows only on a terminal (disable=None) and never with -q."""
    from tqdm import tqdm  # imported when a long step starts: `--help` and `--version` stay instant

    disable = True if QUIET else False if os.environ.get("LYMPHOCYTOSIS_PROGRESS") == "always" else None
    return tqdm(disable=disable, dynamic_ncols=True, mininterval=1.0, **kwargs)
