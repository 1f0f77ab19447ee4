"""Is a new cohort like the training one? Each patient, and the cohort as a whole, against the model's reference.

A patient is `out` when one of its signals lies far outside the training patients' spread (|robust z| above
PATIENT_Z), its images were saved at a clearly lower JPEG quality than any training image, or a clinical value
lies outside the (widened) training range. The cohort is OUT OF DISTRIBUTION when the median over its patients
of a signal's z-score is shifted beyond what chance allows for that many patients drawn from the training
site (COHORT_Z standard errors of the difference of two medians, the cohort's and the training patients', and
at least COHORT_MIN_SHIFT), when its median JPEG quality is
below the training minimum, or when over a quarter of its patients are `out`. A site-wide change moves every
patient a little: the cohort test sees shifts far smaller than a single patient's test can.

The thresholds were set with benchmarks/site_shift.py on held-out patients of the training site (at most 5% of
unchanged patients `out`) and its panel of acquisition changes (docs/site-shift.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .reference import CLINICAL, EMBEDDING_SIGNAL, DriftReference, signal_frame

PATIENT_Z = 5.0
COHORT_Z = 3.5
COHORT_MIN_SHIFT = 0.5
JPEG_MARGIN = 5.0  # JPEG quality points below the training minimum before it counts
MEDIAN_SE = 1.2533  # standard error of a median of n normal values, times sqrt(n)
OUT_SHARE = 0.25
NOT_CHECKED = "no cell images to check"  # a patient without cells: `unknown`, never a silent `in`
REASONS = {
    "jpeg_quality": "JPEG compression",
    "background_brightness": "exposure",
    "background_red": "white balance",
    "background_blue": "white balance",
    "nucleus_haematoxylin": "stain colour",
    "nucleus_eosin": "stain colour",
    "sharpness": "focus",
    "nucleus_area": "cell size",
    EMBEDDING_SIGNAL: "cell appearance",
    "lymph_count": "lymphocyte count outside training range",
    "age": "age outside training range",
}


@dataclass
class DriftVerdict:
    """Per patient `in`/`out` with its reasons, the cohort's verdict with its reasons, and what was not checked."""

    ids: list[str]
    distribution: list[str]  # "in" / "out" / "unknown" per patient
    reasons: list[str]  # "" or "reason; reason" per patient
    cohort_out: bool | None  # None: not checked
    cohort_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        """The verdict's line, then what limited the check, if anything."""
        return [self.line, *(f"drift check: {note}" for note in self.notes if self.cohort_out is not None)]

    @property
    def line(self) -> str:
        if self.cohort_out is None:
            return "cohort: drift not checked (" + "; ".join(self.notes) + ")"
        if not self.cohort_out:
            return "cohort: in distribution"
        return f"cohort: OUT OF DISTRIBUTION ({', '.join(self.cohort_reasons)})"


def unique(items) -> list[str]:
    return list(dict.fromkeys(items))


def z_scores(reference: DriftReference, frame: pd.DataFrame) -> pd.DataFrame:
    """Robust z-score of every signal the reference has, NaN where the patient's value is unknown."""
    return pd.DataFrame({name: (frame[name].to_numpy(dtype=float) - median) / scale
                         for name, (median, scale) in reference.signals.items()}, index=frame.index)


def patient_reasons(reference: DriftReference, frame: pd.DataFrame, z: pd.DataFrame) -> list[list[str]]:
    reasons = []
    for patient_id in frame.index:
        found = [REASONS[name] for name in z.columns if abs(z.loc[patient_id, name]) > PATIENT_Z]
        quality = frame.loc[patient_id, "jpeg_quality"]
        if reference.jpeg_quality_min is not None and quality < reference.jpeg_quality_min - JPEG_MARGIN:
            found.insert(0, REASONS["jpeg_quality"])
        for name, (low, high) in reference.clinical.items():
            value = frame.loc[patient_id, name]
            if np.isfinite(value) and not low <= value <= high:
                found.append(REASONS[name])
        reasons.append(unique(found))
    return reasons


def cohort_reasons(reference: DriftReference, frame: pd.DataFrame, z: pd.DataFrame,
                   per_patient: list[list[str]]) -> list[str]:
    found = []
    qualities = frame["jpeg_quality"].to_numpy(dtype=float)
    known = reference.jpeg_quality_min is not None and np.isfinite(qualities).any()
    if known and np.nanmedian(qualities) < reference.jpeg_quality_min - JPEG_MARGIN:
        found.append(REASONS["jpeg_quality"])
    for name in z.columns:
        values = z[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        shift = float(np.median(values))
        chance = MEDIAN_SE * np.sqrt(1 / len(values) + 1 / reference.n_patients)  # both medians are estimates
        if abs(shift) > max(COHORT_Z * chance, COHORT_MIN_SHIFT):
            found.append(REASONS[name])
    flagged = sum(bool(r) for r in per_patient)
    if flagged >= max(2, OUT_SHARE * len(per_patient)):
        counts = pd.Series([r for rs in per_patient for r in rs]).value_counts()
        found += [reason for reason in counts.index if counts[reason] >= max(2, OUT_SHARE * flagged)]
    for name in CLINICAL:  # a few patients outside the range are patients; a quarter of them is another population
        outside = sum(REASONS[name] in r for r in per_patient)
        if outside >= max(2, OUT_SHARE * len(per_patient)):
            found.append(REASONS[name])
    return unique(found)


def verdict_of(reference: DriftReference, frame: pd.DataFrame) -> DriftVerdict:
    """The verdict on the patients of `frame` (reference.signal_frame's columns)."""
    z = z_scores(reference, frame)
    per_patient = patient_reasons(reference, frame, z)
    notes = []
    image_signals = [name for name in z.columns if name != EMBEDDING_SIGNAL]
    if not image_signals:
        notes.append("the model's reference has no image signals (its training images could not be read): checked "
                     "the embeddings and clinical values only")
    elif frame[image_signals].isna().all().all():
        notes.append("the images could not be read: checked the embeddings and clinical values only")
    cohort = cohort_reasons(reference, frame, z, per_patient)
    blind = z.isna().all(axis=1).to_numpy()  # no image signal, no embedding: nothing about the cells was checked
    distribution = ["out" if r else "unknown" if b else "in" for r, b in zip(per_patient, blind)]
    reasons = ["; ".join(r) if r else NOT_CHECKED if b else "" for r, b in zip(per_patient, blind)]
    return DriftVerdict(list(frame.index), distribution, reasons, bool(cohort), cohort, notes)


def check_drift(reference: DriftReference | None, cohort, ids: list[str]) -> DriftVerdict:
    """Compare the patients `ids` of `cohort` to the model's reference (None: a model saved without one)."""
    ids = list(ids)
    if reference is None:
        return DriftVerdict(ids, ["unknown"] * len(ids), ["no drift reference in the model"] * len(ids), None,
                            notes=["the model has no drift reference; refit it to add one"])
    return verdict_of(reference, signal_frame(cohort, ids, reference.embedding))
