"""The clinical-only model saved beside the image model, and predictions that say what each call rests on.

`fit` trains, on the same patients and settings, the model of the clinical attributes alone (the one `cv`
compares against) and saves it in `<model-dir>/clinical-only-<hash>/`, which the image model's `model.json`
names (written after it). `predict --clinical-only-fallback` gives it the patients without a readable cell image (see
lymphocytosis/evidence.py); everyone else gets the image model's probability.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evidence import CLINICAL_ONLY_DIR, evidence_column
from ..metrics import decide

log = logging.getLogger(__name__)


CLINICAL_NAME = re.compile(rf"^{CLINICAL_ONLY_DIR}-[0-9a-f]{{16}}$")


def save_clinical_model(model_dir: Path, cohort, ids, spec, params, training: dict) -> str | None:
    """Fit the clinical-only model and save it in `<model-dir>/clinical-only-<hash>/` (named by its boosters'
    content, like the boosters themselves, so a refit never overwrites the one the working model names); return
    that name for the image model to record. None, with a warning, when it cannot separate the classes."""
    from .classifier import FittedModel
    from .persistence import MODEL_FILE, save_model

    model = FittedModel.fit(cohort, ids, spec.clinical_only(), params, {**training, "role": "clinical-only fallback"})
    if not model.separates:
        log.warning("the clinical-only model gives every training patient the same probability: not saved, so "
                    "predict --clinical-only-fallback is unavailable with this model")
        return None
    key = hashlib.sha256("".join(b.model_to_string() for b in model.boosters).encode()).hexdigest()[:16]
    name = f"{CLINICAL_ONLY_DIR}-{key}"
    if not (Path(model_dir) / name / MODEL_FILE).is_file():
        save_model(model, Path(model_dir) / name)
    return name


def remove_other_clinical_models(model_dir: Path, keep: str | None) -> None:
    """Once the image model names its clinical-only model, the others (earlier fits, interrupted saves) go."""
    for path in Path(model_dir).glob(f"{CLINICAL_ONLY_DIR}-*"):
        if path.name != keep and CLINICAL_NAME.match(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def load_clinical_model(model_dir: Path, model):
    """The clinical-only model saved with `model` (the one its training record names)."""
    from .persistence import load_model

    name = model.training.get("clinical_only")
    if not (isinstance(name, str) and CLINICAL_NAME.match(name) and (Path(model_dir) / name).is_dir()):
        raise InputError(f"{model_dir}: holds no clinical-only model saved with this model (fit saves one when the "
                         "clinical attributes separate the classes); refit to use --clinical-only-fallback")
    return load_model(Path(model_dir) / name)


@dataclass(frozen=True)
class EvidencedPrediction:
    ids: list[str]
    probabilities: np.ndarray
    evidence: list[str]

    @property
    def labels(self) -> np.ndarray:
        return decide(self.probabilities)


def predict_with_evidence(model, clinical, cohort, ids: list[str], fallback_ids: list[str]) -> EvidencedPrediction:
    """The image model's probabilities for patients with cells, the clinical-only model's for `fallback_ids`."""
    fallback = set(fallback_ids)
    imaged = [p for p in ids if p not in fallback]
    probabilities = dict.fromkeys(ids, np.nan)
    if imaged:
        probabilities.update(zip(imaged, model.predict_proba(cohort, imaged).probabilities))
    if fallback:
        probabilities.update(zip(fallback_ids, clinical.predict_proba(cohort, fallback_ids).probabilities))
    values = np.array([probabilities[p] for p in ids], dtype=float)
    return EvidencedPrediction(list(ids), values, evidence_column(ids, fallback))
