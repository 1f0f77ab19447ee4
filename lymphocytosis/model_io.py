"""Saved models: LightGBM's text format plus JSON, never pickle, so opening a model file cannot run code.

    <dir>/model.json     feature specification, LightGBM parameters, fitted feature state (cell-score
                         weights, PCA), feature names, embeddings provenance, training summary
    <dir>/booster_<k>.txt one LightGBM model per ensemble member
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import lightgbm as lgb

from . import __version__
from .atomic_files import atomic_write_json
from .bag_features import FeatureSpec
from .embedding_store import describe_provenance_difference, identity
from .errors import InputError

MODEL_FORMAT = "lymphocytosis-model/1"


def save_model(directory: Path, spec: FeatureSpec, params: dict, state: dict, boosters: list[lgb.Booster],
               feature_names: list[str], provenance: dict, training: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Refitting over an old model: remove its model.json first, so a run killed while boosters are being
    # rewritten leaves no model that looks complete, and remove its boosters, so none outlives it.
    (directory / "model.json").unlink(missing_ok=True)
    for stale in directory.glob("booster_*.txt"):
        stale.unlink()
    for k, booster in enumerate(boosters):
        booster.save_model(str(directory / f"booster_{k}.txt"))
    document = {
        "format": MODEL_FORMAT,
        "tool_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_spec": spec.to_dict(),
        "params": params,
        "n_boosters": len(boosters),
        "feature_names": feature_names,
        "embeddings_provenance": provenance,
        "training": training,
        "state": state,
    }
    atomic_write_json(directory / "model.json", document)  # written last: a model dir with model.json is complete
    return directory / "model.json"


def load_model(directory: Path) -> dict:
    directory = Path(directory)
    path = directory / "model.json"
    if not path.is_file():
        raise InputError(f"{directory}: no saved model here (run `python model.py fit` first)")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a model of this tool (format {document.get('format') if isinstance(document, dict) else None!r})")
    missing = [k for k in ("feature_spec", "n_boosters", "feature_names", "embeddings_provenance", "state") if k not in document]
    if missing:
        raise InputError(f"{path}: incomplete model description (missing {', '.join(missing)}); refit the model")
    document["spec"] = FeatureSpec.from_dict(document["feature_spec"])
    document["boosters"] = []
    for k in range(int(document["n_boosters"])):
        booster_path = directory / f"booster_{k}.txt"
        if not booster_path.is_file():
            raise InputError(f"{booster_path}: missing; the saved model is incomplete")
        try:
            document["boosters"].append(lgb.Booster(model_file=str(booster_path)))
        except lgb.basic.LightGBMError as exc:
            raise InputError(f"{booster_path}: not a readable LightGBM model ({str(exc).splitlines()[0]})") from None
    return document


def check_same_provenance(saved: dict, provenance: dict, embeddings_path: Path) -> None:
    """Refuse to apply a model to embeddings made by another model, weights or preprocessing."""
    if identity(saved) != identity(provenance):
        raise InputError(
            f"{embeddings_path}: embeddings of another provenance than the model was trained on "
            f"({describe_provenance_difference(saved, provenance)}; model's first); re-extract with the model's settings"
        )
