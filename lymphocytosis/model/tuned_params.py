"""Where a run's feature specification and LightGBM parameters come from: the defaults, or what tune.py saved.

A parameters file is tied to the embeddings (provenance) and the labelled patients it was tuned on: settings
tuned elsewhere are no evidence for these patients, so `auto` falls back to the defaults and an explicit path
is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..contract.provenance import require_same_sets
from ..defaults import artifact_paths
from ..errors import InputError, in_file
from ..files import atomic_write_json
from .cohort import Cohort
from .feature_spec import FeatureSpec
from .params import DEFAULT_PARAMS, validate_params

log = logging.getLogger(__name__)

DEFAULTS = "defaults"
BEST_PARAMS_FORMAT = "lymphocytosis-best-params/1"  # the `format` of tune.py's best-settings file
EARLIER_BEST_PARAMS_KEYS = {"feature_spec", "params", "embeddings_provenance", "dataset_fingerprint", "study", "trial"}


@dataclass(frozen=True)
class Settings:
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    params: dict = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    source: str = DEFAULTS  # "defaults" or the parameters file they came from

    @property
    def tuned(self) -> bool:
        return self.source != DEFAULTS

    def to_dict(self) -> dict:
        return {"source": self.source, "feature_spec": self.spec.to_dict(), "params": self.params}


def save_settings(path: Path, settings: Settings, cohort: Cohort, extra: dict) -> None:
    """Write tune.py's best settings (callers check first that `path` is new or `is_best_params_file`)."""
    atomic_write_json(path, {"format": BEST_PARAMS_FORMAT, "feature_spec": settings.spec.to_dict(), "params": settings.params,
                             "embeddings_provenance": cohort.provenance, "dataset_fingerprint": cohort.fingerprint,
                             **extra})


def is_best_params_file(path: Path) -> bool:
    """True for a best-settings file that tune.py wrote (now, or before the `format` key existed): the only kind
    of file `--best-params` may replace."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable, a folder, not UTF-8, not JSON, nested too deep
        return False
    if not isinstance(document, dict):
        return False
    return document.get("format") == BEST_PARAMS_FORMAT or document.keys() >= EARLIER_BEST_PARAMS_KEYS


def read_settings_file(path: Path) -> tuple[Settings, dict]:
    """The settings in a parameters file and the whole document (for its provenance and fingerprint)."""
    try:  # ValueError: also a number too long to read (over 4300 digits); RecursionError: absurd nesting
        document = json.loads(path.read_text())
        spec = FeatureSpec.from_dict(document["feature_spec"])
        params = validate_params(document["params"], str(path))
    except (ValueError, RecursionError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a parameters file written by tune.py ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    except InputError as exc:
        raise in_file(path, exc) from None
    provenance = document.get("embeddings_provenance", {})
    if not (isinstance(provenance, dict) and all(isinstance(v, dict) for v in provenance.values())):
        raise InputError(f"{path}: embeddings_provenance must map each embeddings name to its settings, not "
                         f"{type(provenance).__name__}; tune again")
    return Settings(spec, params, str(path)), document


def check_tuned_here(path: Path, document: dict, cohort: Cohort) -> None:
    require_same_sets(document.get("embeddings_provenance", {}), cohort.provenance,
                      f"{path}: tuned on embeddings of another provenance", "tune again on these embeddings")
    if document.get("dataset_fingerprint") != cohort.fingerprint:
        raise InputError(f"{path}: tuned on other labelled patients (dataset fingerprint "
                         f"{document.get('dataset_fingerprint')} vs {cohort.fingerprint})")


def load_settings(choice: str, cohort: Cohort, best_params: Path | None = None) -> Settings:
    """`default`, `auto` (tune.py's best in `best_params` if tuned on these patients' embeddings of this
    provenance, else the defaults) or a path (refused when tuned on other embeddings or patients)."""
    if choice == "default":
        return Settings()
    path = Path(best_params or artifact_paths(cohort.primary.path).best_params) if choice == "auto" else Path(choice)
    if not path.is_file():
        if choice == "auto":
            return Settings()
        raise InputError(f"{path}: parameters file not found")
    settings, document = read_settings_file(path)
    try:
        check_tuned_here(path, document, cohort)
    except InputError as exc:
        if choice != "auto":
            raise
        log.warning("%s; using the defaults", exc)
        return Settings()
    return settings
