"""Stain controls: take colour away as a shortcut before a cell image is embedded (`extract.py --stain`).

Some label information in these images is in how the slide was stained or scanned, not in the cell: the colour
of the background and of the red cells far from the lymphocyte separates tumoral from reactive patients (README,
"Accuracy"). A model that uses it would fail on slides from another laboratory. Each method here returns an
image of the same size; the method is recorded in the embeddings' provenance (`preprocessing.stain`).

- `grayscale`: luminance (ITU-R 601) in all three channels. No hue left at all, basophilia included; a grey
  image is unchanged.
- `reinhard`: Reinhard et al. (2001): each image's CIELAB means and standard deviations are mapped to fixed
  reference values. Removes global colour casts; but the statistics include the lymphocyte, so a cell with
  much cytoplasm is recoloured differently from one with little.
- `slide`: each image is normalised against its own slide, seen around the cell: per channel, optical density
  relative to the image's background is rescaled so that the background becomes the reference white and the
  red cells (the pink cells in the image's border band) the reference red-cell colour. What is left is the
  lymphocyte's colour relative to the red cells and background of the same slide: what a cytologist judges.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import lab2rgb, rgb2lab

from ..defaults import Stain
from ..errors import InputError
from .segmentation import SMOOTHING_SIGMA, border_band, green_thresholds, optical_density

# References: medians over every 5th image of the development data (2,037 images), printed by
# `python benchmarks/stain_references.py --root /data/dlmi --every 5`.
REFERENCE_WHITE = np.array([252.0, 227.0, 201.0])  # background RGB
REFERENCE_RED_CELL = np.array([182.0, 148.0, 162.0])  # red-cell RGB, image border band
REFERENCE_LAB_MEAN = np.array([75.4, 11.7, 3.3])  # CIELAB mean of whole images
REFERENCE_LAB_STD = np.array([18.2, 9.0, 15.3])
OD_GAIN_LIMITS = (0.25, 4.0)  # a red-cell optical density this far from the reference is not a red cell


def check_method(method: str) -> Stain:
    try:
        return Stain(method)
    except ValueError:
        raise InputError(f"--stain {method}: expected one of {', '.join(Stain)}") from None


def grayscale(rgb: np.ndarray) -> np.ndarray:
    luminance = rgb @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luminance[..., None], 3, axis=-1)


def reinhard(rgb: np.ndarray) -> np.ndarray:
    lab = rgb2lab(rgb / 255.0)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    lab = (lab - mean) / np.maximum(std, 1e-6) * REFERENCE_LAB_STD + REFERENCE_LAB_MEAN
    return lab2rgb(lab) * 255.0


def slide_references(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The image's background colour and its red cells' colour (border band, away from the centred cell), as
    medians; None when the image has no background or no red cells to measure."""
    green = ndi.gaussian_filter(rgb[..., 1], SMOOTHING_SIGMA)
    thresholds = green_thresholds(green)
    if thresholds is None:
        return None
    background = green > thresholds[1]
    red_cells = border_band(green.shape) & ~background & (green >= thresholds[0])
    if background.sum() < 100 or red_cells.sum() < 100:
        return None
    return np.median(rgb[background], axis=0), np.median(rgb[red_cells], axis=0)


def slide(rgb: np.ndarray) -> np.ndarray:
    references = slide_references(rgb)
    if references is None:
        return rgb  # nothing to anchor on: left as it is (rare: no background or no red cells)
    white, red_cell = references
    red_od = optical_density(red_cell, white)
    gain = np.clip(optical_density(REFERENCE_RED_CELL, REFERENCE_WHITE) / np.maximum(red_od, 1e-3), *OD_GAIN_LIMITS)
    return REFERENCE_WHITE * np.exp(-optical_density(rgb, white) * gain)


def normalise_array(rgb: np.ndarray, method: str) -> np.ndarray:
    """(H, W, 3) float 0-255 -> the same, stain-normalised by `method`."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if method == "none":
        return rgb
    return {"grayscale": grayscale, "reinhard": reinhard, "slide": slide}[check_method(method)](rgb)


def normalise(image: Image.Image, method: str) -> Image.Image:
    """A PIL RGB image, stain-normalised by `method` (unchanged for "none")."""
    if method == "none":
        return image
    out = normalise_array(np.asarray(image.convert("RGB")), method)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
