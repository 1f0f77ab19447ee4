"""A model's compact reference of its training cohort, saved in model.json under `drift_reference`, and what a
patient's drift signals are measured against.

For each signal (signals.py, plus `embedding_distance` from the embeddings) it keeps the training patients'
median and robust spread (`spread`, with a floor so a signal that never varied in training does not turn
the smallest change into an alarm); the lowest JPEG quality seen; the widened range of the clinical values;
and the mean and standard deviation of every embedding dimension over the training cells, from which a
cell's distance to the training cells is measured. A few kilobytes plus two vectors of the embedding's width.
Everything read back is checked (keys, types, shapes, finite values, positive spreads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..model.json_values import finite_number, integer, number_array
from .signals import IMAGE_SIGNALS, patient_image_signals

VERSION = 1
EMBEDDING_SIGNAL = "embedding_distance"
STD_FLOOR_SHARE = 0.1  # of the median dimension's standard deviation: the tightest a dimension may count as
SIGNALS = (*IMAGE_SIGNALS[1:], EMBEDDING_SIGNAL)  # compared as robust z-scores (jpeg_quality by its own rule)
# The smallest spread each signal is given: a training site whose images barely vary (one scanner, one stain
# batch) would otherwise call a shift of a third of a grey level "exposure". Roughly the smallest change that
# matters: 1.5 grey levels of background, 1% in a colour ratio, 0.005 in optical density or area share.
SCALE_FLOORS = {"background_brightness": 1.5, "background_red": 0.01, "background_blue": 0.01,
                "nucleus_haematoxylin": 0.005, "nucleus_eosin": 0.005, "sharpness": 0.1, "nucleus_area": 0.005,
                EMBEDDING_SIGNAL: 0.01}
CLINICAL = ("lymph_count", "age")
COUNT_FACTOR = 1.5  # lymphocyte counts accepted from the training minimum / 1.5 to the maximum x 1.5
AGE_MARGIN = 10.0  # years beyond the training range
KEYS = {"version", "n_patients", "signals", "jpeg_quality_min", "clinical", "embedding"}


@dataclass(frozen=True)
class EmbeddingMoments:
    """Mean and standard deviation of each embedding dimension over the training cells of one feature set."""

    name: str
    mean: np.ndarray
    std: np.ndarray

    def distance(self, bag: np.ndarray) -> float:
        """Log of the mean squared standardised deviation of the bag's cells: grows when cells look unlike any
        training cell (compression artefacts, blur, another stain), little with the patient's diagnosis."""
        if len(bag) == 0:
            return float("nan")
        z = (np.asarray(bag, dtype=np.float64) - self.mean) / self.std
        return float(np.log(np.mean(z ** 2)))


@dataclass
class DriftReference:
    n_patients: int
    signals: dict[str, tuple[float, float]]  # name -> (median, scale) over the training patients
    jpeg_quality_min: float | None  # None: the training images had no JPEG tables
    clinical: dict[str, tuple[float, float]]  # name -> accepted (low, high)
    embedding: EmbeddingMoments | None = None
    notes: list[str] = field(default_factory=list)  # what could not be measured at fit time (not saved)

    def to_dict(self) -> dict:
        moments = self.embedding
        return {
            "version": VERSION,
            "n_patients": self.n_patients,
            "signals": {k: {"median": m, "scale": s} for k, (m, s) in self.signals.items()},
            "jpeg_quality_min": self.jpeg_quality_min,
            "clinical": {k: [lo, hi] for k, (lo, hi) in self.clinical.items()},
            "embedding": None if moments is None else {"name": moments.name, "mean": moments.mean.tolist(),
                                                       "std": moments.std.tolist()},
        }

    @classmethod
    def from_dict(cls, data) -> DriftReference:
        """model.json's `drift_reference`, every value checked; an InputError names the key."""
        where = "drift_reference"
        if not isinstance(data, dict) or set(data) != KEYS:
            raise InputError(f"{where} must be an object of {', '.join(sorted(KEYS))}")
        if integer(data["version"], f"{where}.version", 1, 1000) != VERSION:
            raise InputError(f"{where}.version {data['version']} is not {VERSION}; refit the model")
        signals = {}
        if not isinstance(data["signals"], dict) or not set(data["signals"]) <= set(SIGNALS):
            raise InputError(f"{where}.signals must map names of {', '.join(SIGNALS)} to their median and scale")
        for name, entry in data["signals"].items():
            if not isinstance(entry, dict) or set(entry) != {"median", "scale"}:
                raise InputError(f"{where}.signals.{name} must be an object of median and scale")
            median = finite_number(entry["median"], f"{where}.signals.{name}.median")
            scale = finite_number(entry["scale"], f"{where}.signals.{name}.scale")
            if scale <= 0:
                raise InputError(f"{where}.signals.{name}.scale must be positive")
            signals[name] = (median, scale)
        quality = data["jpeg_quality_min"]
        quality = None if quality is None else finite_number(quality, f"{where}.jpeg_quality_min")
        return cls(integer(data["n_patients"], f"{where}.n_patients", 1, 10**9), signals, quality,
                   read_clinical_ranges(data["clinical"], where), read_moments(data["embedding"], where))


def read_clinical_ranges(data, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(data, dict) or not set(data) <= set(CLINICAL):
        raise InputError(f"{where}.clinical must map names of {', '.join(CLINICAL)} to [low, high]")
    ranges = {}
    for name, bounds in data.items():
        low, high = number_array(bounds, f"{where}.clinical.{name}", 1) if isinstance(bounds, list) else (None, None)
        if low is None or len(bounds) != 2 or low > high:
            raise InputError(f"{where}.clinical.{name} must be [low, high] with low <= high")
        ranges[name] = (float(low), float(high))
    return ranges


def read_moments(data, where: str) -> EmbeddingMoments | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != {"name", "mean", "std"} or not isinstance(data["name"], str):
        raise InputError(f"{where}.embedding must be null or an object of name, mean and std")
    mean = number_array(data["mean"], f"{where}.embedding.mean", 1)
    std = number_array(data["std"], f"{where}.embedding.std", 1)
    if mean.shape != std.shape:
        raise InputError(f"{where}.embedding: mean of {len(mean)} and std of {len(std)} dimensions")
    if (std <= 0).any():
        raise InputError(f"{where}.embedding.std must be positive")
    return EmbeddingMoments(data["name"], mean, std)


def image_signal_frame(cohort, ids: list[str]) -> pd.DataFrame:
    """Each patient's image signals (signals.py), read from the images the embeddings were made from (the
    dataset's `<split>/<ID>/` folders); a row of NaN where they cannot be read."""
    primary = cohort.primary
    rows = {}
    for patient_id in ids:
        folder = Path(cohort.dataset_root) / str(cohort.clinical.loc[patient_id, "split"]) / patient_id
        values = patient_image_signals(folder, primary.filenames.get(patient_id, [])) if folder.is_dir() else None
        rows[patient_id] = values or dict.fromkeys(IMAGE_SIGNALS, np.nan)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(IMAGE_SIGNALS)).reindex(ids)


def embedding_moments(cohort, ids: list[str]) -> EmbeddingMoments | None:
    feature_set = cohort.primary
    if feature_set.measured:
        return None
    cells = [feature_set.bags[p] for p in ids if len(feature_set.bags[p])]
    if not cells:
        return None
    stacked = np.concatenate(cells).astype(np.float64)
    std = stacked.std(axis=0)
    # A dimension (almost) constant over the training cells, a unit the network never fires there, would turn
    # any new cell's faint activation into a huge deviation and flag a cohort of the same kind (seen on the drawn
    # cells of `make demo`: 284 of 1280 dimensions): no dimension counts as tighter than a tenth of the typical one.
    floor = max(STD_FLOOR_SHARE * float(np.median(std)), 1e-6)
    return EmbeddingMoments(feature_set.name, stacked.mean(axis=0), np.maximum(std, floor))


def signal_frame(cohort, ids: list[str], moments: EmbeddingMoments | None, images: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every per-patient signal: image signals (`images`, else read now), embedding distance, clinical values."""
    frame = (images if images is not None else image_signal_frame(cohort, ids)).reindex(ids).copy()
    if moments is not None and moments.name in {s.name for s in cohort.sets}:
        bags = cohort.feature_set(moments.name).bags
        frame[EMBEDDING_SIGNAL] = [moments.distance(bags[p]) if bags[p].shape[1] == len(moments.mean) else np.nan
                                   for p in ids]
    else:
        frame[EMBEDDING_SIGNAL] = np.nan
    for name in CLINICAL:
        frame[name] = cohort.clinical.loc[ids, name].to_numpy(dtype=float)
    return frame


def spread(values: np.ndarray, floor: float) -> float:
    """A robust standard deviation that also covers a signal with two modes (one per diagnosis, say): the larger
    of 1.4826 x MAD and the 10-90% range over 2.563 (both the standard deviation for normal values), floored."""
    mad = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    low, high = np.quantile(values, [0.1, 0.9])
    return max(mad, float(high - low) / 2.563, floor)


def fit_reference(cohort, ids: list[str], images: pd.DataFrame | None = None) -> DriftReference:
    """The reference of the training patients `ids`."""
    ids = list(ids)
    moments = embedding_moments(cohort, ids)
    frame = signal_frame(cohort, ids, moments, images)
    signals, notes = {}, []
    for name in SIGNALS:
        values = frame[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values) < 5:
            continue
        signals[name] = (float(np.median(values)), spread(values, SCALE_FLOORS[name]))
    if not any(name in signals for name in IMAGE_SIGNALS):
        notes.append("the training images could not be read: image signals are not part of the reference")
    qualities = frame["jpeg_quality"].to_numpy(dtype=float)
    quality = float(np.nanmin(qualities)) if np.isfinite(qualities).any() else None
    clinical = {}
    count = frame["lymph_count"].to_numpy(dtype=float)
    if np.isfinite(count).any():
        clinical["lymph_count"] = (float(np.nanmin(count)) / COUNT_FACTOR, float(np.nanmax(count)) * COUNT_FACTOR)
    age = frame["age"].to_numpy(dtype=float)
    if np.isfinite(age).any():
        clinical["age"] = (float(np.nanmin(age)) - AGE_MARGIN, float(np.nanmax(age)) + AGE_MARGIN)
    return DriftReference(len(ids), signals, quality, clinical, moments, notes)
