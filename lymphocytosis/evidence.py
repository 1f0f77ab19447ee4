"""What a patient's call rests on: its cell images and clinical attributes, or the clinical attributes alone.

A patient without one readable cell image has no image evidence. The full model would still give it a
probability (its image features are missing values, which LightGBM sends down a default branch), and that
probability would look like any other: a confident call made without the evidence for it. So:

- `predict` refuses such patients by default, naming each one and why it has no cells (folder missing, all
  images unreadable, links refused); with `--clinical-only-fallback` it predicts them with the clinical-only
  model `fit` saves beside the image model, and every row of predictions.csv says what it rests on (EVIDENCE
  `images+clinical` or `clinical only`);
- `cv` and `fit` refuse when more than a small share of the labelled patients have no cells: a model trained
  on them learns what an empty bag means in this cohort, not what the cells say (`--max-without-cells`
  lowers or raises the bar);
- `evaluate` refuses a cohort with more than that share of labelled patients without cells, and below it
  refuses (naming them) any patient without cells: the image model's numbers must rest on images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import InputError

log = logging.getLogger(__name__)

IMAGES_AND_CLINICAL = "images+clinical"
CLINICAL_ONLY = "clinical only"
DEFAULT_MAX_WITHOUT_CELLS = 0.05  # of the labelled patients; above it cv and fit refuse
CLINICAL_ONLY_DIR = "clinical-only"  # the clinical-only model's folder, inside the model folder
LISTED = 8  # patients named in one line; the rest are counted


@dataclass(frozen=True)
class NoCells:
    """A patient without a readable cell image, and why."""
    patient_id: str
    reason: str


def reason_without_cells(note: str, skipped: list[dict]) -> str:
    """Why a bag is empty, in a few words, from what extraction recorded: its note (folder missing, a folder
    link refused, no image files) or the reasons its images were skipped."""
    if note and note != "no images":
        return note
    if not skipped:
        return "folder holds no image files" if note == "no images" else "no cell images"
    reasons = [str(s.get("reason", "")) for s in skipped]
    if all("link" in r and "refused" in r or r.startswith("link to outside") for r in reasons):
        return f"all {len(skipped)} images are links, refused"
    return f"all {len(skipped)} images unreadable (e.g. {skipped[0].get('file')}: {reasons[0][:80]})"


def without_cells(cohort, ids) -> list[NoCells]:
    """The patients among `ids` whose bag is empty, in `ids` order."""
    primary = cohort.primary
    reasons = primary.empty_reasons
    return [NoCells(p, reasons.get(p, "no cell images")) for p in ids if primary.bags[p].shape[0] == 0]


def listing(patients: list[NoCells]) -> str:
    shown = ", ".join(f"{p.patient_id} ({p.reason})" for p in patients[:LISTED])
    more = len(patients) - LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def warn_without_cells(patients: list[NoCells]) -> None:
    """One warning line for all of them (not one per patient: hundreds of lines hide the message)."""
    if len(patients) == 1:
        log.warning("patient %s has 0 cells (%s); its image features will be missing", patients[0].patient_id,
                    patients[0].reason)
    elif patients:
        log.warning("%d patients have 0 cells; their image features will be missing: %s", len(patients), listing(patients))


def require_cells_to_train(cohort, max_share: float) -> None:
    """`cv` and `fit` learn from the labelled patients (`evaluate` judges a model on them): refuse when more than
    `max_share` of them have no cells."""
    labelled = cohort.labelled_ids
    if not cohort.sets or not labelled:
        return
    empty = without_cells(cohort, labelled)
    if len(empty) > max_share * len(labelled):
        raise InputError(
            f"{len(empty)} of {len(labelled)} labelled patients ({len(empty) / len(labelled):.0%}) have no readable cell "
            f"image, more than --max-without-cells {max_share:g} allows: {listing(empty)}; fix their folders and rerun "
            "extract.py, or raise --max-without-cells to train on them anyway")


def refuse_without_cells(patients: list[NoCells], verb: str = "predict") -> None:
    """`predict` without `--clinical-only-fallback`, and `evaluate`: no image-based probability for a patient
    without images (an image model judged on them would be judged on what an empty bag means, not on cells)."""
    if not patients:
        return
    if verb == "predict":
        way_out = (f"or give --clinical-only-fallback to predict them from the clinical attributes alone (marked "
                   f"'{CLINICAL_ONLY}' in the EVIDENCE column)")
    else:
        way_out = "or remove them from the cohort's CSV to evaluate the model on the patients with cells"
    raise InputError(
        f"{len(patients)} patient(s) to {verb} have no readable cell image, so no image-based probability: "
        f"{listing(patients)}; fix their folders and rerun extract.py, {way_out}")


def evidence_column(ids, fallback_ids) -> list[str]:
    fallback = set(fallback_ids)
    return [CLINICAL_ONLY if p in fallback else IMAGES_AND_CLINICAL for p in ids]


def share(text: str) -> float:
    """argparse type of --max-without-cells: a share in [0, 1]."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text} is out of range (a share between 0 and 1, e.g. 0.05)")
    return value


def require_stain_normalised(directory, stained: dict[str, dict], own: dict[str, dict]) -> None:
    """`report --stain-cv` writes how much of the image signal "survives stain normalisation": only true of a CV
    whose embeddings were extracted with a stain control the report's own embeddings were not."""
    from .contract.provenance import stain_control
    from .contract.store import is_measurement

    controls = {name: stain_control(p) for name, p in stained.items() if not is_measurement(p)}
    unstained = [name for name, control in controls.items() if control in ("none", "unknown")]
    if unstained:
        raise InputError(f"--stain-cv {directory}: cross-validation on embeddings extracted without stain normalisation "
                         f"({unstained[0]}: --stain {controls[unstained[0]]}); give the CV of embeddings extracted "
                         "with --stain")
    same = [name for name, p in own.items() if not is_measurement(p) and stain_control(p) in controls.values()]
    if same:
        raise InputError(f"--stain-cv {directory}: the report's own embeddings ({same[0]}) have the same stain control "
                         f"(--stain {stain_control(own[same[0]])}); nothing would be compared")
