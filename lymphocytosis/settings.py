"""Where a run's feature specification and LightGBM parameters come from: defaults, or what tune.py saved."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .bag_features import FeatureSpec
from .classifier import DEFAULT_PARAMS
from .embedding_store import describe_provenance_difference, identity
from .errors import InputError

log = logging.getLogger(__name__)

BEST_PARAMS = Path("artifacts/best_params.json")


def default_settings() -> tuple[FeatureSpec, dict]:
    return FeatureSpec(), dict(DEFAULT_PARAMS)


def save_settings(path: Path, spec: FeatureSpec, params: dict, provenance: dict, extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"feature_spec": spec.to_dict(), "params": params,
                               "embeddings_provenance": identity(provenance), **extra}, indent=1))
    os.replace(tmp, path)


def load_settings(choice: str, provenance: dict) -> tuple[FeatureSpec, dict, str]:
    """`default`, `auto` (tune.py's best if saved for embeddings of this provenance, else default) or a path."""
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
    if identity(saved) != identity(provenance):
        message = f"{path}: tuned on embeddings of another provenance ({describe_provenance_difference(saved, provenance)})"
        if choice == "auto":
            log.warning("%s; using the defaults", message)
            return (*default_settings(), "defaults")
        raise InputError(message)
    return spec, params, str(path)
