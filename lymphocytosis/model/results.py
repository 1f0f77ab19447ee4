"""Saved cross-validation results, so the report (or anyone) reads them instead of re-running the CV.

    <dir>/cv.json            design, metrics (per repeat and summarised) of both models, settings, provenance
    <dir>/predictions.csv    one row per patient and repeat: ID, label, repeat, fold, PROBABILITY of the full
                             model, CLINICAL_PROBABILITY of the clinical-only model (STAMP's patient-preds)
    <dir>/explanations.h5    held-out SHAP values, feature values, gain shares, per-cell scores
    <dir>/folds/r<R>-f<K>/   every fold's full model, in the saved-model format
    <dir>/decision.json      every fold's thresholds and recalibration, learned on its training patients only
                             (decision_results.py)

The folder is written under a temporary name and renamed into place: it is complete or absent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError, in_file
from ..files import atomic_directory, require_own_folder
from ..invocation import command
from .cohort import Cohort, patients_fingerprint
from .decision_results import DECISION_FILE, CVDecisions
from .evaluation import Comparison, CVDesign, CVResult
from .explanations import Explanations
from .feature_spec import FeatureSpec
from .json_values import integer, is_number
from .params import validate_params
from .persistence import save_model
from .tables import FeatureColumn
from .tuned_params import Settings

log = logging.getLogger(__name__)

RESULTS_FORMAT = "lymphocytosis-cv/3"  # /3: decision.json (thresholds, recalibration per fold)
OLD_RESULTS_FORMATS = ("lymphocytosis-cv/1", "lymphocytosis-cv/2")  # replaced by a new run, never read


@dataclass
class SavedCV:
    comparison: Comparison  # probabilities of both models; fold models are not reloaded
    explanations: Explanations
    settings: Settings
    provenance: dict[str, dict]  # the cohort's embeddings identity per feature set
    fingerprint: str  # the labelled patients (Cohort.fingerprint)
    data_fingerprint: str  # their cells and CSV rows (Cohort.data_fingerprint)
    info: dict  # embeddings paths, dataset root, created, seconds, tool version
    decisions: CVDecisions | None = None  # each fold's thresholds and recalibration (decision.json); None: not saved

    def matches(self, cohort: Cohort, settings: Settings, design: CVDesign) -> bool:
        """Were these results computed on these embeddings and patients, with these settings and folds?"""
        return not self.differences(cohort, settings, design)

    def differences(self, cohort: Cohort, settings: Settings, design: CVDesign) -> list[str]:
        """What makes saved results unfit for this run, in words (empty: they fit)."""
        found = []
        if self.provenance != cohort.provenance:
            found.append("computed on other embeddings (re-extracted, or other extraction settings)")
        if self.fingerprint != cohort.fingerprint:
            found.append("computed on other labelled patients or labels")
        elif self.data_fingerprint != cohort.data_fingerprint:
            found.append("computed on other cells or CSV rows of these patients")
        old = self.comparison.design
        if old != design:
            found.append(f"{old.folds}-fold x {old.repeats} repeats, seed {old.seed} (this run: {design.folds}-fold x "
                         f"{design.repeats} repeats, seed {design.seed})")
        if self.settings.spec != settings.spec or self.settings.params != settings.params:
            found.append(f"made with {describe_settings(self.settings)} (this run: {describe_settings(settings)})")
        return found


def describe_settings(settings: Settings) -> str:
    return "the default settings" if not settings.tuned else f"the settings of {settings.source}"


def results_format(directory: Path) -> str | None:
    """The format recorded in a results folder's cv.json; None when there is none or it cannot be read."""
    try:
        found = json.loads((Path(directory) / "cv.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def current_results(directory: Path) -> bool:
    """Does the folder hold results this version reads? Those of an older version are recomputed, not read."""
    found = results_format(directory)
    if found in OLD_RESULTS_FORMATS:
        log.info("%s: cross-validation results of an older version (%s): they will be recomputed", directory, found)
    return (Path(directory) / "cv.json").is_file() and found not in OLD_RESULTS_FORMATS


def check_results_dir(directory: Path) -> None:
    """Results replace only earlier results: never a folder holding anything else (the folder is swapped whole),
    nor one where something was added beside what the tool wrote (the manifest says what that was)."""
    from ..output_kinds import CV_LEGACY

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--cv-dir {directory}: exists and is not a folder")
    ours = results_format(directory) in (RESULTS_FORMAT, *OLD_RESULTS_FORMATS)
    if directory.is_dir() and any(directory.iterdir()) and not ours:
        raise InputError(f"--cv-dir {directory}: holds other files than saved cross-validation results; "
                         "choose an empty or new folder")
    require_own_folder("--cv-dir", directory, "cv", CV_LEGACY)


def predictions_frame(comparison: Comparison) -> pd.DataFrame:
    full, clinical = comparison.full, comparison.clinical
    fold_of = {(r.fold.repeat, patient_id): r.fold.fold for r in full.folds for patient_id in r.fold.test_ids}
    rows = []
    for repeat in range(full.probabilities.shape[0]):
        for i, (patient_id, label) in enumerate(zip(full.ids, full.labels)):
            rows.append({"ID": patient_id, "LABEL": int(label), "REPEAT": repeat, "FOLD": fold_of.get((repeat, patient_id), -1),
                         "PROBABILITY": full.probabilities[repeat, i],
                         "CLINICAL_PROBABILITY": clinical.probabilities[repeat, i]})
    return pd.DataFrame(rows)


def write_explanations(path: Path, ex: Explanations) -> None:
    with open(path, "w+b") as raw, h5py.File(raw, "w") as handle:  # Python I/O: a full disk is an OSError
        handle.attrs["columns"] = json.dumps([c.to_dict() for c in ex.columns])
        handle.attrs["ids"] = json.dumps(ex.ids)
        for name in ("gain_share", "shap", "values"):
            handle.create_dataset(name, data=getattr(ex, name))
        for k, (backbone, scores) in enumerate(ex.cell_scores.items()):
            group = handle.create_group(f"cell_scores/{k}")  # names like hf-hub:org/model are no HDF5 paths
            group.attrs["backbone"] = backbone
            for patient_id, values in scores.items():
                group.create_dataset(patient_id, data=values)


def read_explanations(path: Path) -> Explanations:
    with h5py.File(path, "r") as handle:
        columns = [FeatureColumn.from_dict(c) for c in json.loads(handle.attrs["columns"])]
        arrays = {name: float_array(handle[name][()], f"explanations.h5: {name}") for name in ("gain_share", "shap", "values")}
        scores = {str(group.attrs["backbone"]): {patient_id: float_array(d[()], f"explanations.h5: cell scores of {patient_id}")
                                                  for patient_id, d in group.items()}
                  for group in handle.get("cell_scores", {}).values()}
        return Explanations(json.loads(handle.attrs["ids"]), columns, cell_scores=scores, **arrays)


def float_array(values, what: str) -> np.ndarray:
    """A dataset read back as float64; ValueError (naming `what`) when it holds no numbers."""
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise ValueError(f"{what} holds {values.dtype} values, not numbers")
    return values.astype(np.float64)


def save_cv(directory: Path, comparison: Comparison, explanations: Explanations, settings: Settings, cohort: Cohort,
            seconds: float, decisions: CVDecisions | None = None) -> Path:
    document = {
        "format": RESULTS_FORMAT,
        **comparison.summary_dict(),
        "per_repeat": {"full": [s.to_dict() for s in comparison.full.per_repeat],
                       "clinical_only": [s.to_dict() for s in comparison.clinical.per_repeat]},
        "settings": settings.to_dict(),
        "provenance": cohort.provenance,
        "dataset_fingerprint": cohort.fingerprint,
        "data_fingerprint": cohort.data_fingerprint,
        "info": {"embeddings": [str(s.path) for s in cohort.sets], "dataset_root": str(cohort.dataset_root),
                 "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "seconds": seconds,
                 "tool_version": __version__},
    }
    with atomic_directory(directory, kind="cv") as tmp:
        predictions_frame(comparison).to_csv(tmp / "predictions.csv", index=False)
        write_explanations(tmp / "explanations.h5", explanations)
        for result in comparison.full.folds:
            save_model(result.model, tmp / "folds" / f"r{result.fold.repeat}-f{result.fold.fold}")
        if decisions is not None:
            (tmp / DECISION_FILE).write_text(json.dumps(decisions.to_dict(), indent=1))
        (tmp / "cv.json").write_text(json.dumps(document, indent=1))
    return Path(directory)


def check_saved(comparison: Comparison, ex: Explanations) -> str | None:
    """What is inconsistent between the saved files, if anything (they are read back, never trusted)."""
    full, clinical = comparison.full, comparison.clinical
    repeats, n = full.probabilities.shape
    if repeats != comparison.design.repeats or clinical.probabilities.shape != (repeats, n) or n == 0:
        return f"predictions.csv holds {repeats} repeats of {n} patients, cv.json says {comparison.design.repeats}"
    for result in (full, clinical):
        if not (np.isfinite(result.probabilities).all() and ((result.probabilities >= 0) & (result.probabilities <= 1)).all()):
            return "predictions.csv holds a missing or invalid probability"
    n_features = len(ex.columns)
    if (ex.ids != full.ids or ex.shap.shape != (repeats, n, n_features + 1) or ex.values.shape != (repeats, n, n_features)
            or ex.gain_share.shape != (comparison.design.folds * repeats, n_features)):
        return "explanations.h5 does not match predictions.csv (patients, repeats or features)"
    return check_explanation_values(ex, set(full.ids))


def check_explanation_values(ex: Explanations, ids: set[str]) -> str | None:
    """Finite SHAP values and gain shares; feature values and cell scores finite or NaN (missing), never
    infinite; cell scores one number per cell of a patient of the CV."""
    if not np.isfinite(ex.shap).all():
        return "explanations.h5: SHAP values hold NaN or infinite values"
    if not (np.isfinite(ex.gain_share).all() and (ex.gain_share >= 0).all()):
        return "explanations.h5: gain shares hold negative, NaN or infinite values"
    if np.isinf(ex.values).any():
        return "explanations.h5: feature values hold infinite values"
    for scores in ex.cell_scores.values():
        for patient_id, values in scores.items():
            if patient_id not in ids:
                return f"explanations.h5: cell scores of patient {patient_id}, who is not in predictions.csv"
            if values.ndim != 1 or np.isinf(values).any():
                return f"explanations.h5: cell scores of patient {patient_id} are not one finite number per cell"
    return None


def cv_result(frame: pd.DataFrame, column: str) -> CVResult:
    wide = frame.pivot(index="ID", columns="REPEAT", values=column)
    ids = list(dict.fromkeys(frame["ID"]))
    labels = frame.drop_duplicates("ID").set_index("ID").loc[ids, "LABEL"].to_numpy(dtype=int)
    return CVResult(ids, labels, wide.loc[ids].to_numpy(dtype=np.float64).T)


def read_predictions(path: Path, fingerprint: str) -> pd.DataFrame:
    """predictions.csv, its labels checked: 0 or 1, one per patient, and the labelled patients cv.json was
    computed on (its dataset fingerprint), so an edited label or ID cannot change the report's metrics."""
    frame = pd.read_csv(path, dtype={"ID": str}, keep_default_na=False)
    if frame.empty:
        raise ValueError("predictions.csv holds no patient")
    labels = frame["LABEL"]
    if labels.dtype.kind not in "iu" or not set(labels.tolist()) <= {0, 1}:
        raise ValueError("predictions.csv holds a label other than 0 or 1")
    if (frame.groupby("ID")["LABEL"].nunique() > 1).any():
        raise ValueError("predictions.csv gives a patient two labels")
    first = frame.drop_duplicates("ID")
    if patients_fingerprint(first["ID"].tolist(), first["LABEL"].to_numpy()) != fingerprint:
        raise ValueError("predictions.csv: its patients or labels differ from those cv.json was computed on")
    return frame


def read_design(document: dict) -> CVDesign:
    """The folds of cv.json: integers in the ranges model.py accepts."""
    return CVDesign(integer(document["folds"], "folds", 2, 100),
                    integer(document["repeats"], "repeats", 1, 1000),
                    integer(document["seed"], "seed", 0, 2**31 - 1))


def read_document(path: Path) -> dict:
    document = json.loads(path.read_text())
    if not isinstance(document, dict) or document.get("format") != RESULTS_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InputError(f"{path}: not cross-validation results of this tool (format {found!r})")
    for key, kind in (("provenance", dict), ("dataset_fingerprint", str), ("data_fingerprint", str), ("info", dict),
                      ("settings", dict)):
        if not isinstance(document.get(key), kind):
            raise InputError(f"{path}: {key} missing or malformed")
    info = document["info"]
    seconds, created = info.get("seconds"), info.get("created")
    if not (is_number(seconds) and seconds >= 0 and not (isinstance(seconds, float) and math.isinf(seconds))):
        raise InputError(f"{path}: info.seconds must be a number of seconds, not {seconds!r:.40}")
    if not isinstance(created, str):
        raise InputError(f"{path}: info.created must be a date, not {created!r:.40}")
    return document


def load_cv(directory: Path) -> SavedCV:
    directory = Path(directory)
    path = directory / "cv.json"
    if not path.is_file():
        raise InputError(f"{directory}: no saved cross-validation here (run `{command('cv')}` first)")
    reading = path  # the file an unexpected error is reported in
    try:
        document = read_document(path)
        design = read_design(document)
        reading = directory / "predictions.csv"
        frame = read_predictions(reading, document["dataset_fingerprint"])
        comparison = Comparison(design, cv_result(frame, "PROBABILITY"), cv_result(frame, "CLINICAL_PROBABILITY"))
        settings = Settings(FeatureSpec.from_dict(document["settings"]["feature_spec"]),
                            validate_params(document["settings"]["params"], "settings"), str(document["settings"]["source"]))
        reading = directory / "explanations.h5"
        explanations = read_explanations(reading)
        reading = directory
        problem = check_saved(comparison, explanations)
        if problem:
            raise ValueError(problem)
        reading = directory / DECISION_FILE
        decisions = CVDecisions.from_dict(json.loads(reading.read_text()), comparison) if reading.exists() else None
    except InputError as exc:
        raise in_file(reading if reading.name == DECISION_FILE else path, exc) from None
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError, RecursionError) as exc:
        raise InputError(f"{reading}: damaged cross-validation results ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}); rerun `{command('cv')}`") from None
    return SavedCV(comparison, explanations, settings, document["provenance"], document["dataset_fingerprint"],
                   document["data_fingerprint"], document["info"], decisions)
