"""The report's headline when the settings were tuned on the very patients it reports on.

A cross-validation of settings that a search chose on these patients flatters them (the search kept the
settings that happened to score best on these folds). So the headline is the nested estimate when
`tune.py --nested` measured one, else the tuned CV marked "optimistic (settings tuned on these patients)",
always beside the default settings' CV on the same folds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.results import SavedCV
from ..model.saved_runs import NestedEstimate
from .document import Code, Mark

OPTIMISTIC = "optimistic (settings tuned on these patients)"


@dataclass(frozen=True)
class Honesty:
    """What a report of tuned settings sets beside its CV."""

    source: str  # the tuned settings' file
    default: SavedCV  # the default settings' CV on the same folds
    nested: NestedEstimate | None  # tune.py --nested of these patients, if measured


def headline(saved: SavedCV, honesty: Honesty | None) -> list:
    """The sentence that opens the report (and "In short"); empty with the default settings, whose CV is honest."""
    if honesty is None:
        return []
    tuned = saved.comparison.full.summary.balanced_accuracy
    default = honesty.default.comparison.full.summary.balanced_accuracy
    folds = "on the same folds"
    nested = honesty.nested
    if nested is not None:
        return [Mark(f"Balanced accuracy {nested.balanced_accuracy} on patients the tuning never saw."),
                f" Nested cross-validation: the search for settings ran again inside each of {nested.outer_folds} outer "
                f"folds x {nested.outer_repeats} repeats ({nested.trials} trials each) and was judged on the held-out "
                f"fold; the default settings reach {nested.default_balanced_accuracy} on the same outer folds "
                f"({nested.path.name}). The cross-validation below uses the settings of {honesty.source}: its "
                f"{tuned.mean:.3f} is {OPTIMISTIC}; the default settings reach {default} {folds}."]
    return [Mark(f"Balanced accuracy {tuned}: {OPTIMISTIC}."),
            f" The settings of {honesty.source} were chosen by a search on these same patients, so every number "
            f"below flatters them. The default settings reach {default} {folds}. ",
            Code("tune --nested"), " measures what tuning buys on patients the search never saw."]


def lede_caveat(honesty: Honesty | None) -> str:
    return "" if honesty is None else " The settings, though, were chosen by tuning on these same patients."
