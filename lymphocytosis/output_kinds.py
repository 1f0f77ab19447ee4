"""What each output of model.py may replace: its own kind of file or folder, recognised by format key or exact
header, and nothing else (see files.py for the rule and the checks)."""

from __future__ import annotations

import json
from pathlib import Path

from .files import first_line, require_own_file, require_own_folder

CV_SUMMARY_KEYS = {"n_patients", "n_tumoral", "folds", "repeats", "seed", "balanced_accuracy", "roc_auc",
                   "clinical_only", "oof"}
PREDICTIONS_HEADER = "ID,LABEL,PROBABILITY"  # further columns may follow
SUBMISSION_HEADER = "Id,Predicted"

# Folders written before they carried a manifest: recognised by their exact layout.
CV_LEGACY = ("cv.json", "predictions.csv", "explanations.h5", "decision.json", "folds", "folds/r*-f*", "folds/r*-f*/model.json",
             "folds/r*-f*/booster-*.txt", "folds/r*-f*/.lock")
REPORT_LEGACY = (".lymphocytosis-report", "index.html", "summary.md", "patients.csv", "figures", "figures/*.png",
                 "cells", "cells/*", "cells/*/*.jpg", "patients", "patients/*.html")
EVALUATION_LEGACY = (".lymphocytosis-evaluation", "results.json", "patients.csv", "operating_points.csv",
                     "calibration.csv", "reliability.csv", "decision_curve.csv", "index.html", "summary.md", "figures",
                     "figures/*.png")
PARTS_ENTRIES = ("settings.json", "*.h5", "*.claim", "*.claim.stale-*", ".*.tmp", "workers", "workers/*")


def is_cv_summary(path: Path) -> bool:
    """`cv --json`'s document: an object with the summary's keys and no other tool file's format key."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and "format" not in document and set(document) >= CV_SUMMARY_KEYS


def is_predictions(path: Path) -> bool:
    line = first_line(path)
    return line is not None and (line == PREDICTIONS_HEADER or line.startswith(PREDICTIONS_HEADER + ","))


def is_submission(path: Path) -> bool:
    return first_line(path) == SUBMISSION_HEADER


FILE_KINDS = {"--json": ("a cross-validation summary (cv --json)", is_cv_summary),
              "--out": ("a predictions file (header ID,LABEL,PROBABILITY...)", is_predictions),
              "--submission": ("a submission file (header Id,Predicted)", is_submission)}
# --cv-dir is not here: it holds one folder per settings and design (model/saved_runs.py), and only that folder is
# replaced whole (model/results.py check_results_dir applies the rule to it).
FOLDER_KINDS = {"--out-dir": ("report", REPORT_LEGACY)}
COMMAND_FOLDER_KINDS = {"evaluate": {"--out-dir": ("evaluation", EVALUATION_LEGACY)}}  # where a command differs


def require_own_outputs(outputs: dict, command: str = "") -> None:
    """Every output of the run (option -> path) is new or the tool's own kind (before any work starts)."""
    folder_kinds = {**FOLDER_KINDS, **COMMAND_FOLDER_KINDS.get(command, {})}
    for option, path in outputs.items():
        if path is None:
            continue
        if option in FILE_KINDS:
            require_own_file(option, path, *FILE_KINDS[option])
        elif option in folder_kinds:
            require_own_folder(option, path, *folder_kinds[option])
