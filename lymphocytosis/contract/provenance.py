"""What makes two sets of per-cell features comparable, and the one place that refuses to mix them.

An embeddings file records the model, weights, preprocessing and numeric settings that made it. Versions,
dates and paths are recorded too but do not make two files differ: the same weights and preprocessing give
the same features. So is `weights_file_sha256`, the digest of the weights file's bytes: `weights_sha256`
(of the parameters as loaded) already identifies the weights, and files written before the file digest was
recorded must still match a rerun with the same weights.
"""

from __future__ import annotations

import json

from ..errors import InputError

PROVENANCE_KEYS = ("model", "weights_source", "weights_sha256", "features", "preprocessing", "tta", "precision", "dtype")


# Present only in a file of training views (augmentation.py: the cells as another acquisition might have made
# them), holding the views' recipe: such a file is never the same as an embeddings file, nor one of another recipe.
TRAINING_VIEW = "training_view"


def identity(provenance: dict) -> dict:
    """The part of a provenance that must match for two files to be mixed."""
    found = {k: provenance.get(k) for k in PROVENANCE_KEYS}
    if TRAINING_VIEW in provenance:
        found[TRAINING_VIEW] = provenance[TRAINING_VIEW]
    return found


def describe_difference(expected: dict, actual: dict) -> str:
    keys = [*PROVENANCE_KEYS, TRAINING_VIEW]
    diffs = [f"{k}: {expected.get(k)!r} vs {actual.get(k)!r}" for k in keys if expected.get(k) != actual.get(k)]
    return "; ".join(diffs) or "none"


def same(expected: dict, actual: dict) -> bool:
    return identity(expected) == identity(actual)


def require_same(expected: dict, actual: dict, what: str, remedy: str) -> None:
    """Raise one line naming `what` differs, each differing setting (expected first) and the `remedy`."""
    if not same(expected, actual):
        raise InputError(f"{what} ({describe_difference(expected, actual)}); {remedy}")


def require_same_sets(expected: dict[str, dict], actual: dict[str, dict], what: str, remedy: str) -> None:
    """`require_same` for several named embeddings files (a cohort's or a model's): the same names, each the same."""
    if list(expected) != list(actual):
        raise InputError(f"{what} (embeddings {', '.join(expected)} vs {', '.join(actual)}); {remedy}")
    for name in expected:
        require_same(expected[name], actual[name], f"{what}, {name}", remedy)


def stain_control(provenance: dict) -> str:
    """The stain control (extract.py --stain) recorded in a file's preprocessing; "none" when absent (files made
    before stain controls existed), "unknown" when unreadable."""
    try:
        return str(json.loads(provenance.get("preprocessing") or "{}").get("stain", "none"))
    except (TypeError, ValueError, AttributeError):
        return "unknown"
