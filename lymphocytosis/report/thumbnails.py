"""Small pictures of the cells behind a patient's cell score: the part of each image that was embedded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..contract.store import plain_name
from ..errors import InputError
from ..files import cannot_write
from ..invocation import command
from ..model.cohort import Cohort

log = logging.getLogger(__name__)

THUMBNAIL_PX = 160  # large enough to see chromatin and cytoplasm; each links to the whole image
CELLS_PER_SIDE = 5


@dataclass(frozen=True)
class CellThumb:
    file: str  # the image's name in the patient's folder
    score: float  # its held-out cell score
    src: str | None  # the thumbnail, relative to the report folder; None when the image could not be read
    problem: str | None = None
    full: str | None = None  # the whole image as extraction decoded it (uncropped), relative to the report folder


@dataclass
class CellGallery:
    """A patient's highest- and lowest-scoring cells."""

    top: list[CellThumb] = field(default_factory=list)
    bottom: list[CellThumb] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"{c.file}: {c.problem}" for c in (*self.top, *self.bottom) if c.problem]


def thumbnail_geometry(provenance: dict) -> tuple[int, int]:
    """(image_size, crop) of the extraction, so thumbnails show the part of the image that was embedded."""
    try:
        prep = json.loads(provenance.get("preprocessing", "{}"))
        return int(prep.get("image_size", 0)), int(prep.get("crop", 0))
    except (TypeError, ValueError):
        return 0, 0


def write_thumbnail(source: Path, target: Path, image_size: int, crop: int, full: Path | None = None) -> str | None:
    """Small JPEG of what the network saw: the image decoded as extraction decodes it (every mode to 8-bit RGB,
    upright), at the extraction's size, centre-cropped as torchvision crops; and at `full` the whole decoded image,
    which the thumbnail opens; the reason as text when it cannot."""
    from PIL import Image

    from ..contract.images import DECODE_ERRORS, canonical_image, load_rgb

    try:
        image = load_rgb(source)
        if image_size:
            image = canonical_image(image, image_size)
        if full is not None:
            full.parent.mkdir(parents=True, exist_ok=True)
            image.save(full, quality=90)
        if crop and crop < min(image.size):
            left, top = round((image.size[0] - crop) / 2.0), round((image.size[1] - crop) / 2.0)
            image = image.crop((left, top, left + crop, top + crop))
        image = image.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        return "image file missing"
    except DECODE_ERRORS as exc:
        return f"unreadable image ({type(exc).__name__})"
    try:  # a failed write (a full disk) is the report's failure, never blamed on the cell images
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=85)
    except OSError as exc:
        raise cannot_write(target, exc) from None
    return None


def patient_cells(cohort: Cohort, patient_id: str, scores: np.ndarray, out_dir: Path) -> CellGallery:
    """Thumbnails of the CELLS_PER_SIDE highest- and lowest-scoring cells (no cell shown twice)."""
    geometry = thumbnail_geometry(cohort.primary.provenance)
    if len(scores) != len(cohort.primary.filenames[patient_id]):
        raise InputError(f"patient {patient_id}: the saved CV results score {len(scores)} cells, the embeddings hold "
                         f"{len(cohort.primary.filenames[patient_id])}; rerun `{command('cv')}`")
    order = np.argsort(-scores, kind="stable")
    n_top = min(CELLS_PER_SIDE, len(order))
    n_bottom = min(CELLS_PER_SIDE, len(order) - n_top)
    folder = cohort.dataset_root / str(cohort.clinical.loc[patient_id, "split"]) / patient_id
    gallery = CellGallery()
    for side, cells in (("top", order[:n_top]), ("bottom", order[::-1][:n_bottom])):
        for rank, cell in enumerate(cells, 1):
            filename = cohort.primary.filenames[patient_id][cell]
            relative, whole = f"cells/{patient_id}/{side}{rank}.jpg", f"cells/{patient_id}/{side}{rank}-full.jpg"
            if plain_name(filename):  # names read from the embeddings file stay inside the patient's folder
                problem = write_thumbnail(folder / filename, out_dir / relative, *geometry, full=out_dir / whole)
            else:
                problem = "not a plain file name; not read"
            if problem:
                log.debug("patient %s: %s: %s", patient_id, folder / filename, problem)
            getattr(gallery, side).append(CellThumb(filename, float(scores[cell]), None if problem else relative, problem,
                                                    None if problem else whole))
    return gallery
