"""Where a run's feature specification and LightGBM parameters come from: defaults, or what tune.py saved."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .atomic_files import atomic_write_json
from .bag_features import FeatureSpec
from .classifier import DEFAULT_PARAMS
from .embedding_store import describe_provenance_difference, identity
from .errors import InputError

log = logging.getLogger(__name__)

BEST_PARAMS = Path("artifacts/best_params.json")


def default_settings() -> tuple[FeatureSpec, dict]:
    return FeatureSpec(), dict(DEFAULT_PARAMS)


def save_settings(path: Path, spec: FeatureSpec, params: dict, cohort, extra: dict) -> None:
    atomic_write_json(path, {"feature_spec": spec.to_dict(), "params": params,
                             "embeddings_provenance": identity(cohort.provenance),
                             "dataset_fingerprint": cohort.fingerprint, **extra})


def load_settings(choice: str, cohort) -> tuple[FeatureSpec, dict, str]:
    """`default`, `auto` (tune.py's best if tuned on these patients' embeddings of this provenance, else the
    defaults) or a path (refused when tuned on other embeddings or patients)."""
    if choice == "default":
        return (*default_settings(), "defaults")
    path = BEST_PARAMS if choice == "auto" else Path(choice)
    if not path.is_file():
        if choice == "auto":
            return (*default_settings(), "defaults")
        raise InputError(f"{path}: parameters file not found")
    try:
        document = json.loads(path.read_text())
        spec, params = FeatureSpec.from_dict(document["feature_spec"]), {**DEFAULT_PARAMS, **document["params"]}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a parameters file written by tune.py ({exc})") from None
    saved = document.get("embeddings_provenance", {})
    message = None
    if identity(saved) != identity(cohort.provenance):
        message = f"{path}: tuned on embeddings of another provenance ({describe_provenance_difference(saved, cohort.provenance)})"
    elif document.get("dataset_fingerprint") != cohort.fingerprint:
        message = (f"{path}: tuned on other labelled patients (dataset fingerprint "
                   f"{document.get('dataset_fingerprint')} vs {cohort.fingerprint})")
    if message:
        if choice == "auto":
            log.warning("%s; using the defaults", message)
            return (*default_settings(), "defaults")
        raise InputError(message)
    return spec, params, str(path)
