"""Where saved cross-validation results and nested-CV estimates live, and which of them fit a run.

`--cv-dir` (default <artifacts>/cv) holds one folder per settings and design:

    <cv-dir>/<folds>x<repeats>-seed<seed>-<hash of the settings>/   the results folder (model/results.py)

so a CV with other settings or folds is saved beside the earlier ones and never replaces them (the report of
tuned settings needs the default settings' CV of the same folds too). A results folder written by an earlier
version straight into <cv-dir> (cv.json at its top) is still read when it fits.

`tune.py --nested` writes <artifacts>/nested/<design>.json: the held-out accuracy of "tune, then fit", which is
the honest headline of a report whose settings were tuned on its own patients.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..metrics import Spread
from .cohort import Cohort
from .evaluation import CVDesign
from .results import OLD_RESULTS_FORMATS, RESULTS_FORMAT, SavedCV, current_results, load_cv, results_format
from .tuned_params import Settings

log = logging.getLogger(__name__)

NESTED_FORMAT = "lymphocytosis-nested/1"


def results_key(settings: Settings, design: CVDesign) -> str:
    """The folder name of a CV's results: its design in words, its settings by hash (same settings, same name)."""
    settings_json = json.dumps({"feature_spec": settings.spec.to_dict(), "params": settings.params}, sort_keys=True)
    digest = hashlib.sha256(settings_json.encode()).hexdigest()[:10]
    return f"{design.folds}x{design.repeats}-seed{design.seed}-{digest}"


def results_dir(root: Path, settings: Settings, design: CVDesign) -> Path:
    return Path(root) / results_key(settings, design)


def check_results_root(root: Path) -> None:
    """`--cv-dir` holds saved results only (per-settings folders, or an earlier version's plain layout), so
    writing one more folder there never mixes with a user's own files."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"--cv-dir {root}: exists and is not a folder")
    foreign_top = (root / "cv.json").exists() and not ours(root)  # not results of this tool, or damaged
    if foreign_top or (root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()) and not candidates(root)):
        raise InputError(f"--cv-dir {root}: holds other files than saved cross-validation results; "
                         "choose an empty or new folder")


def default_settings(cohort: Cohort) -> Settings:
    """The default settings as a run on this cohort uses them (with its measurement files, if any)."""
    from .measurements import settings_for

    return settings_for(cohort, Settings())


@dataclass
class Lookup:
    """Saved results that fit a run (or None), where they are or would be written, and why others did not fit."""

    saved: SavedCV | None
    directory: Path
    rejected: list[str]  # "<folder>: <what differed>", one per saved results folder that did not fit


def candidates(root: Path) -> list[Path]:
    """Every results folder under `root`: the per-settings folders, and an earlier version's plain layout."""
    root = Path(root)
    found = [root] if ours(root) else []
    if root.is_dir():
        found += sorted(p for p in root.iterdir() if p.is_dir() and ours(p))
    return found


def ours(directory: Path) -> bool:
    return results_format(directory) in (RESULTS_FORMAT, *OLD_RESULTS_FORMATS)


def find_results(root: Path, cohort: Cohort, settings: Settings, design: CVDesign) -> Lookup:
    """The saved results under `root` for this cohort, settings and design, if any. A damaged results folder of
    other settings is passed over with a warning; this run's own folder (or the plain layout) damaged is refused,
    since results someone edited are no evidence and should be looked at, not silently replaced."""
    target = results_dir(root, settings, design)
    rejected = []
    for directory in sorted(candidates(root), key=lambda d: d != target):  # this run's own folder first
        if not current_results(directory):
            rejected.append(f"{directory}: results of an older version")
            continue
        try:
            saved = load_cv(directory)
        except InputError as exc:
            if directory in (target, Path(root)):  # where this run would read or write: refused, as before
                raise
            log.warning("%s (passed over)", exc)
            rejected.append(f"{directory}: unreadable")
            continue
        found = saved.differences(cohort, settings, design)
        if not found:
            return Lookup(saved, directory, [])
        rejected.append(f"{directory}: {'; '.join(found)}")
    return Lookup(None, target, rejected)


def nested_path(home: Path, outer_folds: int, outer_repeats: int, inner_folds: int, inner_repeats: int, trials: int,
                seed: int) -> Path:
    """tune.py --nested's default output: one file per design, so another design never replaces it."""
    return (Path(home) / "nested" /
            f"outer{outer_folds}x{outer_repeats}-inner{inner_folds}x{inner_repeats}-{trials}trials-seed{seed}.json")


def nested_document(result_dict: dict, cohort: Cohort) -> dict:
    """A nested-CV result, tied to the patients and embeddings it was computed on."""
    return {"format": NESTED_FORMAT, **result_dict, "dataset_fingerprint": cohort.fingerprint,
            "data_fingerprint": cohort.data_fingerprint, "embeddings_provenance": cohort.provenance}


@dataclass(frozen=True)
class NestedEstimate:
    path: Path
    balanced_accuracy: Spread  # over outer repeats: tuning repeated inside each outer fold
    default_balanced_accuracy: Spread  # the default settings on the same outer folds
    outer_folds: int
    outer_repeats: int
    trials: int


def read_nested(path: Path, cohort: Cohort) -> NestedEstimate | None:
    """A nested-CV file of these patients and embeddings, or None (another cohort's, or unreadable: warned)."""
    try:
        document = json.loads(Path(path).read_text())
        if document.get("format") != NESTED_FORMAT:
            return None
        if (document["dataset_fingerprint"] != cohort.fingerprint or document["data_fingerprint"] != cohort.data_fingerprint
                or document["embeddings_provenance"] != cohort.provenance):
            return None
        spread = [Spread(float(document[k]["balanced_accuracy"]["mean"]), float(document[k]["balanced_accuracy"]["std"]))
                  for k in ("tuned", "default")]
        return NestedEstimate(Path(path), spread[0], spread[1], int(document["outer_folds"]),
                              int(document["outer_repeats"]), int(document["trials_per_outer_fold"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        log.warning("%s: unreadable nested cross-validation results (%s: %s); passed over", path, type(exc).__name__, exc)
        return None


def find_nested(home: Path, cohort: Cohort) -> NestedEstimate | None:
    """The nested estimate of these patients with the most outer repeats and trials (newest file on a tie)."""
    folder = Path(home) / "nested"
    files = sorted(folder.glob("*.json"), key=lambda p: -p.stat().st_mtime) if folder.is_dir() else []
    found = [e for e in (read_nested(p, cohort) for p in files) if e is not None]
    return max(found, key=lambda e: (e.outer_repeats * e.outer_folds, e.trials), default=None)
