"""Saved models: LightGBM's text format plus JSON, never pickle, so opening a model file cannot run code.

    <dir>/model.json            feature specification, LightGBM parameters, feature columns, fitted feature
                                state (cell-score weights, PCA), embeddings provenance, training summary, and
                                each booster's file name and SHA-256
    <dir>/booster-<sha>.txt     one LightGBM model per ensemble member, named by its content

A refit never destroys the working model: the new boosters are written beside the old ones (their names come
from their content, so they never overwrite a booster in use), then model.json is replaced atomically, and only
then are the boosters it no longer names removed. A refit killed at any moment leaves the old model or the new
one, complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import lightgbm as lgb

from .. import __version__
from ..errors import InputError
from ..files import atomic_write_json, atomic_write_text
from .classifier import FittedModel
from .feature_spec import FeatureSpec
from .features import FeatureColumn, FittedFeatures

MODEL_FORMAT = "lymphocytosis-model/2"
MODEL_FILE = "model.json"


def save_model(model: FittedModel, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    boosters = []
    for booster in model.boosters:
        text = booster.model_to_string()
        digest = hashlib.sha256(text.encode()).hexdigest()
        name = f"booster-{digest[:16]}.txt"
        if not (directory / name).is_file():
            atomic_write_text(directory / name, text)
        boosters.append({"file": name, "sha256": digest})
    document = {
        "format": MODEL_FORMAT,
        "tool_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_spec": model.spec.to_dict(),
        "params": model.params,
        "columns": [c.to_dict() for c in model.columns],
        "features": model.features.to_dict(),
        "boosters": boosters,
        "embeddings_provenance": model.provenance,
        "training": model.training,
    }
    atomic_write_json(directory / MODEL_FILE, document)  # the switch from the old model to the new one
    in_use = {b["file"] for b in boosters}
    for stale in directory.glob("booster-*.txt"):
        if stale.name not in in_use:
            stale.unlink(missing_ok=True)
    return directory / MODEL_FILE


def read_document(directory: Path) -> dict:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise InputError(f"{directory}: no saved model here (run `python model.py fit` first)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise InputError(f"{path}: not a model of this tool in format {MODEL_FORMAT} (format {found!r}); refit it")
    missing = [k for k in ("feature_spec", "params", "columns", "features", "boosters", "embeddings_provenance")
               if k not in document]
    if missing:
        raise InputError(f"{path}: incomplete model description (missing {', '.join(missing)}); refit the model")
    return document


def read_booster(directory: Path, entry: dict) -> lgb.Booster:
    """A booster whose bytes match the SHA-256 recorded in model.json, checked before LightGBM parses them."""
    path = Path(directory) / str(entry.get("file"))
    if not path.is_file():
        raise InputError(f"{path}: missing; the saved model is incomplete")
    text = path.read_bytes()
    if hashlib.sha256(text).hexdigest() != entry.get("sha256"):
        raise InputError(f"{path}: content differs from the SHA-256 recorded in {MODEL_FILE}; the model was altered")
    try:
        return lgb.Booster(model_str=text.decode())
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable LightGBM model ({str(exc).splitlines()[0]})") from None


def load_model(directory: Path) -> FittedModel:
    directory = Path(directory)
    document = read_document(directory)
    path = directory / MODEL_FILE
    try:
        spec = FeatureSpec.from_dict(document["feature_spec"])
        columns = [FeatureColumn.from_dict(c) for c in document["columns"]]
        features = FittedFeatures.from_dict(spec, document["features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: damaged model description ({type(exc).__name__}: {exc}); refit the model") from None
    boosters = [read_booster(directory, entry) for entry in document["boosters"]]
    for booster in boosters:
        if booster.num_feature() != len(columns):
            raise InputError(f"{path}: a booster has {booster.num_feature()} features, the model {len(columns)}; refit it")
    return FittedModel(spec, dict(document["params"]), features, columns, boosters, document["embeddings_provenance"],
                       document.get("training", {}))
