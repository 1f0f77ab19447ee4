"""Per-cell measurements a cytologist would name, from one May-Grünwald-Giemsa image of a lymphocyte.

Two measurement sets, each a fixed, named vector per cell (NaN where the cell's nucleus was not found):

- `morphometry`: size and shape of the nucleus and the cell (areas in um^2 and lengths in um when the pixel size
  is given, else px; and relative to the diameter of the image's own red cells, which needs no calibration and
  does not change with the microscope's magnification), N/C ratio,
  cytoplasm width, chromatin density and texture (optical density relative to the slide's background), and
  cytoplasm basophilia relative to the red cells of the same image. These are the quantities that describe
  CLL (small mature cells, clumped chromatin, scant cytoplasm) against reactive lymphocytes (larger, with
  abundant basophilic cytoplasm).
- `colour`: the raw mean colours of nucleus, cytoplasm, red cells and background: nothing a cytologist would
  use, everything a stain or scanner difference would show. A model on these alone measures how much label
  information lies in how the slides were stained or scanned.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import regionprops

from ..defaults import MeasurementSet
from ..errors import InputError
from .segmentation import Segmentation, cytoplasm_hue, optical_density, segment
from .stain import check_method, normalise_array

MEASUREMENT_VERSION = "1"
TEXTURE_LEVELS = 16  # chromatin optical density quantised to this many grey levels for the co-occurrence matrix
TEXTURE_MAX_OD = 2.0  # green optical density mapped to the top level (chromatin reaches about 1.5)
CHANNELS = ("red", "green", "blue")


@dataclass(frozen=True)
class MeasurementSettings:
    """What makes two measurement files comparable; recorded in the file (as its `preprocessing`)."""

    kind: str = MeasurementSet.MORPHOMETRY  # a MeasurementSet (its value is recorded)
    pixel_size_um: float | None = None  # um per pixel of the 224 px image; None: lengths in px
    stain: str = "none"  # stain control applied before segmenting (stain.py), as for embeddings
    version: str = MEASUREMENT_VERSION

    def validate(self) -> None:
        if self.kind not in set(MeasurementSet):
            raise InputError(f"--measure {self.kind}: expected one of {', '.join(MeasurementSet)}")
        if self.pixel_size_um is not None and not (0 < self.pixel_size_um < 10):
            raise InputError(f"--pixel-size {self.pixel_size_um}: expected micrometres per pixel, between 0 and 10")
        check_method(self.stain)

    @property
    def length_unit(self) -> str:
        return "px" if self.pixel_size_um is None else "um"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def names(self) -> list[str]:
        return morphometry_names(self.length_unit) if self.kind == "morphometry" else colour_names()


def morphometry_names(unit: str = "px") -> list[str]:
    area, length = f"{unit}2", unit
    return [
        f"nucleus_area_{area}", f"nucleus_diameter_{length}", f"nucleus_perimeter_{length}",
        f"nucleus_major_axis_{length}", f"nucleus_minor_axis_{length}", "nucleus_elongation", "nucleus_solidity",
        "nucleus_circularity", f"cell_area_{area}", f"cell_diameter_{length}", f"cytoplasm_area_{area}",
        f"cytoplasm_width_{length}", "nc_ratio", "nucleus_offset", "nucleus_to_red_cell_diameter",
        "cell_to_red_cell_diameter", "chromatin_density", "chromatin_heterogeneity", "chromatin_clumping",
        "chromatin_contrast", "chromatin_homogeneity", "chromatin_entropy", "cytoplasm_basophilia",
        "cytoplasm_density",
    ]


def unit_power(name: str) -> tuple[str, int]:
    """A quantity of morphometry_names("px") and the power of the pixel size it scales with: its unit suffix says
    (areas px2: 2, lengths px: 1, ratios: 0)."""
    for suffix, power in (("_px2", 2), ("_px", 1)):
        if name.endswith(suffix):
            return name[: -len(suffix)], power
    return name, 0


MORPHOMETRY_ORDER = [unit_power(name) for name in morphometry_names("px")]


def colour_names() -> list[str]:
    return [f"{region}_{channel}" for region in ("nucleus", "cytoplasm", "red_cells", "background") for channel in CHANNELS]


def shape_measures(nucleus: np.ndarray, cell: np.ndarray) -> dict[str, float]:
    """Size and shape in pixels (areas px^2, lengths px); dimensionless ratios."""
    (n,), (c,) = regionprops(nucleus.astype(np.uint8)), regionprops(cell.astype(np.uint8))
    perimeter = max(n.perimeter, 1.0)
    offset = np.hypot(*(np.asarray(n.centroid) - np.asarray(c.centroid)))
    return {
        "nucleus_area": float(n.area), "nucleus_diameter": float(n.equivalent_diameter_area),
        "nucleus_perimeter": float(n.perimeter), "nucleus_major_axis": float(n.axis_major_length),
        "nucleus_minor_axis": float(n.axis_minor_length),
        "nucleus_elongation": float(n.axis_major_length / max(n.axis_minor_length, 1.0)),
        "nucleus_solidity": float(n.solidity), "nucleus_circularity": float(min(4 * np.pi * n.area / perimeter**2, 1.0)),
        "cell_area": float(c.area), "cell_diameter": float(c.equivalent_diameter_area),
        "cytoplasm_area": float(c.area - n.area),
        "cytoplasm_width": float((c.equivalent_diameter_area - n.equivalent_diameter_area) / 2),
        "nc_ratio": float(n.area / c.area), "nucleus_offset": float(offset / c.equivalent_diameter_area),
    }


def chromatin_texture(density: np.ndarray, nucleus: np.ndarray) -> dict[str, float]:
    """Grey-level co-occurrence of the nucleus's quantised optical density (distances 1 and 2 px, 4 directions;
    pixels outside the nucleus excluded): contrast and homogeneity, and the entropy of the OD histogram."""
    rows, cols = np.flatnonzero(nucleus.any(1)), np.flatnonzero(nucleus.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    levels = 1 + np.clip(density[box] / TEXTURE_MAX_OD * (TEXTURE_LEVELS - 1), 0, TEXTURE_LEVELS - 1).astype(np.uint8)
    levels[~nucleus[box]] = 0
    matrix = graycomatrix(levels, [1, 2], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=TEXTURE_LEVELS + 1)
    matrix = matrix[1:, 1:].astype(np.float64)  # drop pairs with a pixel outside the nucleus
    matrix /= np.maximum(matrix.sum(axis=(0, 1), keepdims=True), 1.0)
    histogram = np.bincount(levels[nucleus[box]], minlength=TEXTURE_LEVELS + 1)[1:] / nucleus.sum()
    histogram = histogram[histogram > 0]
    return {"chromatin_contrast": float(graycoprops(matrix, "contrast").mean()),
            "chromatin_homogeneity": float(graycoprops(matrix, "homogeneity").mean()),
            "chromatin_entropy": float(-(histogram * np.log2(histogram)).sum())}


def stain_measures(rgb: np.ndarray, seg: Segmentation) -> dict[str, float]:
    """Chromatin and cytoplasm from optical density relative to the image's own background, and cytoplasm hue
    relative to the image's own red cells: a slide stained or lit differently shifts both references too."""
    od = optical_density(ndi.gaussian_filter(rgb, (0.7, 0.7, 0)), seg.background_rgb)
    density = od[..., 1]  # chromatin absorbs green most
    nucleus_od = density[seg.nucleus]
    local = ndi.gaussian_filter(density, 3.0)
    clumps = (density - local)[seg.nucleus]
    hue = cytoplasm_hue(od)
    red_hue = np.median(hue[seg.red_cells]) if seg.red_cells.any() else np.nan
    cytoplasm = seg.cytoplasm
    return {
        "chromatin_density": float(nucleus_od.mean()), "chromatin_heterogeneity": float(nucleus_od.std()),
        "chromatin_clumping": float(np.mean(np.abs(clumps))), **chromatin_texture(density, seg.nucleus),
        "cytoplasm_basophilia": float(np.median(hue[cytoplasm]) - red_hue) if cytoplasm.any() else np.nan,
        "cytoplasm_density": float(od[cytoplasm].sum(-1).mean()) if cytoplasm.any() else np.nan,
    }


def measure_morphometry(rgb: np.ndarray, seg: Segmentation, pixel_size_um: float | None) -> np.ndarray:
    if not seg.found:
        return np.full(len(morphometry_names()), np.nan)
    values = {**shape_measures(seg.nucleus, seg.cell), **stain_measures(rgb, seg)}
    values["nucleus_to_red_cell_diameter"] = values["nucleus_diameter"] / seg.red_cell_diameter
    values["cell_to_red_cell_diameter"] = values["cell_diameter"] / seg.red_cell_diameter
    scale = 1.0 if pixel_size_um is None else pixel_size_um
    return np.array([values[name] * scale**power for name, power in MORPHOMETRY_ORDER], dtype=np.float64)


def measure_colour(rgb: np.ndarray, seg: Segmentation) -> np.ndarray:
    regions = (seg.nucleus, seg.cytoplasm, seg.red_cells, seg.background)
    return np.concatenate([rgb[mask].mean(0) if mask.any() else np.full(3, np.nan) for mask in regions])


def measure(rgb: np.ndarray, settings: MeasurementSettings) -> np.ndarray:
    """The named vector (`settings.names()`) of one RGB image (H, W, 3), 0-255."""
    rgb = normalise_array(rgb, settings.stain)
    seg = segment(rgb)
    if settings.kind == "colour":
        return measure_colour(rgb, seg)
    return measure_morphometry(rgb, seg, settings.pixel_size_um)
