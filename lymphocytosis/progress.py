"""Progress bars for long steps: one style everywhere, silent when output is not a terminal or with -q.

LYMPHOCYTOSIS_PROGRESS=always shows them anyway (e.g. in a batch job's log). Whether a run is quiet is the
run's to say: a command hands its `Progress` down to the long steps it starts (see cli/common.py `Run`)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """How a run shows its long steps: `quiet` (the commands' -q) shows no bar at all."""

    quiet: bool = False

    def bar(self, **kwargs):
        """A tqdm bar that shows only on a terminal (disable=None) and never when quiet."""
        from tqdm import tqdm  # imported when a long step starts: `--help` and `--version` stay instant

        always = os.environ.get("LYMPHOCYTOSIS_PROGRESS") == "always"
        disable = True if self.quiet else False if always else None
        return tqdm(disable=disable, dynamic_ncols=True, mininterval=1.0, **kwargs)
