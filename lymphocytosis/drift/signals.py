"""What a patient's images say about how they were acquired, not about the patient: one number per signal.

Read from a sample of the patient's image files (torch-free: PIL, numpy, scipy, scikit-image), each signal
is the median over the sampled images of one measurement of the whole 224 px image:

- `jpeg_quality`: the quality the file was saved at, estimated from its luminance quantisation table against
  the IJG standard table (NaN for files without one: PNG, TIFF);
- `background_brightness`, `background_red`, `background_blue`: the brightest fifth of the pixels (the empty
  background of a smear) -- its grey level (exposure) and its red/green and blue/green log ratios (white
  balance);
- `nucleus_haematoxylin`, `nucleus_eosin`: optical densities after colour deconvolution (rgb2hed) of the most
  haematoxylin-dense tenth of the central crop's pixels, where the lymphocyte's nucleus is (stain intensity);
- `sharpness`: log of the Laplacian's energy relative to the grey-level variance of the central crop (focus);
- `nucleus_area`: the fraction of the image whose haematoxylin density is at least half the nucleus's
  (magnification; relative to the nucleus's own density, so a stronger stain does not enlarge it).

The embeddings give one more signal, `embedding_distance` (see reference.py): how far the patient's cells lie
from the training cells, whatever changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hed

from ..contract.images import DECODE_ERRORS, canonical_image, load_rgb

log = logging.getLogger(__name__)

IMAGE_SIGNALS = ("jpeg_quality", "background_brightness", "background_red", "background_blue", "nucleus_haematoxylin",
                 "nucleus_eosin", "sharpness", "nucleus_area")
SAMPLE_PER_PATIENT = 16  # images read per patient: signals are medians, stable well before that
IMAGE_SIZE = 224
# IJG's standard luminance quantisation table (JPEG Annex K), in zigzag order as PIL reports it
_STANDARD_LUMINANCE = np.array([
    16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49, 35, 37, 29, 40, 58, 51,
    61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109, 81, 87, 95, 98, 103, 104, 103, 62, 77,
    113, 121, 112, 100, 120, 92, 101, 103, 99], dtype=np.float64)


def _ijg_tables() -> np.ndarray:
    """(100, 64): the luminance table libjpeg writes for each quality 1..100 (jcparam.c's scaling)."""
    qualities = np.arange(1, 101, dtype=np.float64)
    scales = np.where(qualities < 50, 5000 / qualities, 200 - 2 * qualities)
    return np.clip(np.floor((_STANDARD_LUMINANCE[None, :] * scales[:, None] + 50) / 100), 1, 255)


_IJG_TABLES = _ijg_tables()


def jpeg_quality(image: Image.Image) -> float:
    """The IJG quality (1-100) whose table is closest to the file's luminance table (exact for files written by
    libjpeg, the nearest for others); NaN when the file has none (PNG, TIFF)."""
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return float("nan")
    table = np.asarray(tables[0], dtype=np.float64)
    distance = np.abs(np.log(_IJG_TABLES) - np.log(np.maximum(table, 1))[None, :]).sum(axis=1)
    return float(np.argmin(distance) + 1)


def image_measurements(image: Image.Image) -> dict[str, float]:
    """Every pixel signal of one RGB image, measured at half the 224 px frame (112 px: the signals are
    regional, and it costs a quarter of the time)."""
    frame = canonical_image(image, IMAGE_SIZE)
    small = frame.resize((IMAGE_SIZE // 2,) * 2, Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.float64)
    grey = rgb.mean(axis=2)
    bright = grey >= np.quantile(grey, 0.8)
    background = np.median(rgb[bright], axis=0) + 1.0
    hed = rgb2hed(rgb / 255.0)
    quarter = IMAGE_SIZE // 8
    centre = slice(quarter, 3 * quarter)
    h_centre = hed[centre, centre, 0]
    dense = h_centre >= np.quantile(h_centre, 0.9)
    nucleus_h = float(np.median(h_centre[dense]))
    full_grey = np.asarray(frame.convert("L"), dtype=np.float64)
    grey_centre = full_grey[IMAGE_SIZE // 4:3 * IMAGE_SIZE // 4, IMAGE_SIZE // 4:3 * IMAGE_SIZE // 4]
    laplacian = ndimage.laplace(grey_centre)[1:-1, 1:-1]
    return {
        "background_brightness": float(background.mean()),
        "background_red": float(np.log(background[0] / background[1])),
        "background_blue": float(np.log(background[2] / background[1])),
        "nucleus_haematoxylin": nucleus_h,
        "nucleus_eosin": float(np.median(hed[centre, centre, 1][dense])),
        "sharpness": float(np.log((np.mean(laplacian ** 2) + 1e-6) / (np.var(grey_centre) + 1e-6))),
        "nucleus_area": float(np.mean(hed[..., 0] > 0.5 * nucleus_h)),
    }


def file_signals(path: Path) -> dict[str, float] | None:
    """One image file's signals; None when it cannot be read (the extraction skipped it too)."""
    try:
        with Image.open(path) as raw:
            quality = jpeg_quality(raw)
        values = image_measurements(load_rgb(path))
    except DECODE_ERRORS:
        return None
    return {"jpeg_quality": quality, **values}


def sample(names: list[str], k: int = SAMPLE_PER_PATIENT) -> list[str]:
    """`k` names spread evenly over the bag (all of them when it holds fewer): deterministic."""
    if len(names) <= k:
        return list(names)
    return [names[i] for i in np.linspace(0, len(names) - 1, k).round().astype(int)]


def patient_image_signals(folder: Path, names: list[str]) -> dict[str, float] | None:
    """Median of each signal over a sample of the patient's images in `folder`; None when none is readable
    (folder gone: the embeddings were copied without their images)."""
    rows = [r for r in (file_signals(folder / name) for name in sample(names)) if r is not None]
    if not rows:
        return None
    result = {}
    for key in IMAGE_SIGNALS:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        result[key] = float(np.median(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")
    return result
