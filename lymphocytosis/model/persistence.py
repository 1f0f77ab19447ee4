"""Saved models: LightGBM's text format plus JSON, never pickle, so opening a model file cannot run code.

    <dir>/model.json            feature specification, LightGBM parameters, feature columns, fitted feature
                                state (cell-score weights, PCA), embeddings provenance, training summary, and
                                each booster's file name and SHA-256
    <dir>/booster-<sha>.txt     one LightGBM model per ensemble member, named by its content

A refit never destroys the working model: the new boosters are written beside the old ones (their names come
from their content, so they never overwrite a booster in use), then model.json is replaced atomically, and only
then are the boosters it no longer names removed. A refit killed at any moment leaves the old model or the new
one, complete. Saves into one folder take turns (an exclusive lock on `<dir>/.lock`), and a load holds it shared,
so two fits at once, or a predict during a fit, never see one model's model.json with the other's boosters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import re
from pathlib import Path

import lightgbm as lgb

from .. import __version__
from ..contract.store import is_measurement
from ..drift.reference import DriftReference
from ..errors import InputError, in_file
from ..evidence import CLINICAL_ONLY_DIR
from ..files import atomic_write_json, atomic_write_text
from ..invocation import command
from .classifier import FittedModel
from .decision import DECISION_KEY, SavedDecision
from .feature_spec import FeatureSpec
from .features import FittedFeatures
from .params import validate_params
from .tables import FeatureColumn

MODEL_FORMAT = "lymphocytosis-model/2"
MODEL_FILE = "model.json"
MODEL_CARD = "MODEL_CARD.md"  # written by `fit` beside model.json (model_card.py)
DRIFT_KEY = "drift_reference"  # drift/reference.py reads and checks it


LOCK_FILE = ".lock"


@contextlib.contextmanager
def model_lock(directory: Path, exclusive: bool):
    """Hold `<dir>/.lock`: exclusive to save, shared to load. A folder without one (read-only, or written by an
    earlier version) is read without it."""
    path = Path(directory) / LOCK_FILE
    try:
        handle = open(path, "a" if exclusive else "r")  # noqa: SIM115 (closed by the `with` below)
    except OSError:
        if exclusive:
            raise
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def save_model(model: FittedModel, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with model_lock(directory, exclusive=True):
        return write_model(model, directory)


def booster_text(booster: lgb.Booster) -> tuple[str, str]:
    """A booster's saved form and its SHA-256: the file name, model.json and the model card name it by that."""
    text = booster.model_to_string()
    return text, hashlib.sha256(text.encode()).hexdigest()


def write_model(model: FittedModel, directory: Path) -> Path:
    boosters = []
    for booster in model.boosters:
        text, digest = booster_text(booster)
        name = f"booster-{digest[:16]}.txt"
        if not (directory / name).is_file():
            atomic_write_text(directory / name, text)
        boosters.append({"file": name, "sha256": digest})
    document = {
        "format": MODEL_FORMAT,
        "tool_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "feature_spec": model.spec.to_dict(),
        "params": model.params,
        "columns": [c.to_dict() for c in model.columns],
        "features": model.features.to_dict(),
        "boosters": boosters,
        "embeddings_provenance": model.provenance,
        "training": model.training,
    }
    if model.decision is not None:
        document[DECISION_KEY] = model.decision.to_dict()
    if model.drift_reference is not None:  # optional: models saved before it existed have none
        document[DRIFT_KEY] = model.drift_reference.to_dict()
    atomic_write_json(directory / MODEL_FILE, document)  # the switch from the old model to the new one
    in_use = {b["file"] for b in boosters}
    for stale in directory.glob("booster-*.txt"):
        if stale.name not in in_use:
            stale.unlink(missing_ok=True)
    return directory / MODEL_FILE


def check_model_dir(directory: Path) -> None:
    """A model is saved only into a new or empty folder, or one that holds a model: never among other files."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--model-dir {directory}: exists and is not a folder")
    if directory.is_dir():
        foreign = sorted(p.name for p in directory.iterdir()
                         if p.name not in (MODEL_FILE, MODEL_CARD) and not BOOSTER_NAME.match(p.name)
                         and not p.name.startswith(".") and not (p.name.startswith(f"{CLINICAL_ONLY_DIR}-")
                                                                 and p.is_dir() and not p.is_symlink()))
        if foreign:
            raise InputError(f"--model-dir {directory}: holds other files than a saved model ({foreign[0]}, ...); "
                             "choose an empty or new folder")


BOOSTER_NAME = re.compile(r"^booster-[0-9a-f]{16}\.txt$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def read_document(directory: Path) -> dict:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise InputError(f"{directory}: no saved model here (run `{command('fit')}` first)")
    try:
        document = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # ValueError: also a number too long to read (over 4300 digits)
        raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise InputError(f"{path}: not a model of this tool in format {MODEL_FORMAT} (format {found!r}); refit it")
    expected = {"feature_spec": dict, "params": dict, "columns": list, "features": dict, "boosters": list,
                "embeddings_provenance": dict, "training": dict}
    for key, kind in expected.items():
        if not isinstance(document.get(key), kind):
            raise InputError(f"{path}: {key} is missing or not a{'n object' if kind is dict else ' list'}; refit the model")
    if not all(isinstance(v, dict) for v in document["embeddings_provenance"].values()):
        raise InputError(f"{path}: embeddings_provenance must map each embeddings name to its settings; refit the model")
    entries = document["boosters"]
    if not entries or not all(isinstance(e, dict) and BOOSTER_NAME.match(str(e.get("file"))) and HEX64.match(str(e.get("sha256")))
                              for e in entries):
        raise InputError(f"{path}: boosters must list at least one {{file: booster-<hash>.txt, sha256}}; refit the model")
    return document


def read_booster(directory: Path, entry: dict) -> lgb.Booster:
    """A booster whose bytes match the SHA-256 recorded in model.json, checked before LightGBM parses them."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise InputError(f"{path}: missing; the saved model is incomplete")
    text = path.read_bytes()
    if hashlib.sha256(text).hexdigest() != entry["sha256"]:
        raise InputError(f"{path}: content differs from the SHA-256 recorded in {MODEL_FILE}; the model was altered")
    try:
        return lgb.Booster(model_str=text.decode())
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable LightGBM model ({str(exc).splitlines()[0]})") from None


def check_state(features: FittedFeatures, spec: FeatureSpec, columns: list[FeatureColumn],
                provenance: dict[str, dict]) -> str | None:
    """What is inconsistent in the fitted state of a model.json, if anything (each array's shape and values are
    checked as it is read: FittedFeatures.from_dict)."""
    if list(provenance) != features.backbones:
        return "features.backbones differ from the embeddings named in embeddings_provenance"
    for name in features.backbones:
        measured = is_measurement(provenance[name])
        scored = spec.measurement_score if measured else spec.cell_score
        if scored and name not in features.cell_score:
            return f"features.cell_score has no weights for {name!r}"
        if not measured and spec.embedding_stats and spec.embedding_pca and name not in features.pca:
            return f"features.pca has no basis for {name!r}"
    if not columns:
        return "no feature columns"
    return None


def load_model(directory: Path) -> FittedModel:
    with model_lock(directory, exclusive=False):
        return read_model(Path(directory))


def read_model(directory: Path) -> FittedModel:
    document = read_document(directory)
    path = directory / MODEL_FILE
    try:
        spec = FeatureSpec.from_dict(document["feature_spec"])
        params = validate_params(document["params"], str(path))
        columns = [FeatureColumn.from_dict(c) for c in document["columns"]]
        features = FittedFeatures.from_dict(spec, document["features"])
        problem = check_state(features, spec, columns, document["embeddings_provenance"])
        decision = SavedDecision.from_dict(document[DECISION_KEY]) if DECISION_KEY in document else None
        drift = DriftReference.from_dict(document[DRIFT_KEY]) if DRIFT_KEY in document else None
    except InputError as exc:
        raise in_file(path, exc) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"{path}: damaged model description ({type(exc).__name__}: {exc}); refit the model") from None
    if problem:
        raise InputError(f"{path}: {problem}; refit the model")
    boosters = [read_booster(directory, entry) for entry in document["boosters"]]
    for booster in boosters:
        if booster.num_feature() != len(columns):
            raise InputError(f"{path}: a booster has {booster.num_feature()} features, the model {len(columns)}; refit it")
    return FittedModel(spec, params, features, columns, boosters, document["embeddings_provenance"], document["training"],
                       decision, drift)
