"""Progress bars for long steps: one style everywhere, silent when output is not a terminal or with -q."""

from __future__ import annotations

QUIET = False  # set by the commands' -q


def bar(**kwargs):
    """A tqdm bar that shows only on a terminal (disable=None) and never with -q."""
    from tqdm import tqdm  # imported when a long step starts: `--help` and `--version` stay instant

    return tqdm(disable=True if QUIET else None, dynamic_ncols=True, mininterval=1.0, **kwargs)
