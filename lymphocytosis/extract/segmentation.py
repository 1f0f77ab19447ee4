"""Where the lymphocyte is in a May-Grünwald-Giemsa image: its nucleus, its whole cell, and the slide around it.

Written for the challenge's images (224 px RGB, one lymphocyte centred, red cells and pale background around)
and checked by eye on grids of cells of both classes (`benchmarks/segmentation_grid.py` draws them). No learning:
each image is segmented from its own colour statistics, so a slide stained darker moves the thresholds with it.
Known limits, seen on those grids: a cluster of three touching lymphocytes stays one nucleus; a granulocyte's
lobes are measured as a nucleus (the dataset has a few); in a dense smear, overlapping red cells darker than
usual can join the nucleus. Per-patient medians are robust to such a few cells.

- Nucleus: the darkest class of a 3-class Otsu split of the (smoothed) green channel -- chromatin absorbs green
  most -- keeping the dark object nearest the image centre, holes filled, thin bridges to touching platelets or
  red cells cut by an opening.
- Cell: the nucleus plus the cytoplasm around it. Lymphocyte cytoplasm is blue (basophilic), red cells are
  pink: in optical density relative to the image's background, cytoplasm absorbs relatively more red light
  than the image's own red cells do. Such stained pixels connected to the nucleus and within reach of it are
  cytoplasm; an opening cuts the red cells that touch the cell.
- Slide: background (the brightest class) and red cells (the rest, away from the cell). Their colours are the
  per-image reference that stain controls and relative measurements use; the typical red-cell diameter in the
  image gives a scale that does not depend on the microscope.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import disk
from skimage.segmentation import watershed

SMOOTHING_SIGMA = 1.0  # px, before thresholding: JPEG noise and chromatin texture would fragment the masks
MIN_NUCLEUS_AREA = 400  # px at 224 px: a lymphocyte nucleus is about 1,500-5,000, a platelet under 300
MAX_CENTRE_DISTANCE = 45  # px: the nucleus must come within this distance of the image centre
NUCLEUS_OPENING = 2  # px radius: cuts bridges to touching platelets and red cells
CELL_OPENING = 3  # px radius: cuts the red cells that touch the cytoplasm
MAX_CYTOPLASM_REACH = 40  # px from the nucleus: no lymphocyte has more cytoplasm than that at this scale
BORDER = 24  # px: the image band used as the slide's red-cell reference, away from the centred cell
SPLIT_SOLIDITY = 0.92  # a nucleus mask less convex than this may be two touching nuclei
SPLIT_MIN_FRACTION = 0.25  # ... if each part holds at least this fraction of it
SPLIT_MAX_CUT = 0.6  # ... and the cut between them is shorter than this fraction of the smaller part's diameter
MIN_STAINED_OD = 0.2  # summed optical density below which a pixel is background
MIN_REFERENCE_PIXELS = 50  # red-cell pixels in the border band needed to set the cytoplasm threshold
MIN_HUE_MARGIN = 0.05  # cytoplasm hue must exceed the red cells' by at least this
RED_CELL_AREA = (150, 3000)  # px: plausible single red cells at 224 px
RED_CELL_SOLIDITY = 0.92  # red cells are convex; touching pairs are not


@dataclass
class Segmentation:
    """Masks of one image, and the reference colours of its own slide (RGB, 0-255)."""

    nucleus: np.ndarray  # bool (H, W); all False when no nucleus was found
    cell: np.ndarray  # bool (H, W); nucleus + cytoplasm
    background: np.ndarray  # bool (H, W)
    red_cells: np.ndarray  # bool (H, W): not background, not the cell, not other dark objects
    background_rgb: np.ndarray  # (3,) median colour of the background (the slide's white point)
    red_cell_diameter: float  # px, median equivalent diameter of single red cells; NaN when none

    @property
    def found(self) -> bool:
        return bool(self.nucleus.any())

    @property
    def cytoplasm(self) -> np.ndarray:
        return self.cell & ~self.nucleus


def border_band(shape: tuple[int, int], width: int = BORDER) -> np.ndarray:
    band = np.ones(shape, dtype=bool)
    band[width:-width, width:-width] = False
    return band


def centre_distance(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.indices(shape)
    return np.hypot(yy - (shape[0] - 1) / 2, xx - (shape[1] - 1) / 2)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with every background region that does not reach the image edge filled (one labelling pass:
    several times faster than scipy's iterative `binary_fill_holes`, same result)."""
    labels, _ = ndi.label(~mask)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ((labels > 0) & ~np.isin(labels, edge))


def around(mask: np.ndarray, margin: int, operation) -> np.ndarray:
    """`operation` applied to the bounding box of `mask` grown by `margin` px only, pasted into an empty image:
    the same result as on the whole image for operations that reach no farther than `margin`, at a fraction of
    the cost (a nucleus covers a few percent of the image)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    out = np.zeros_like(mask)
    if rows.size == 0:
        return out
    top, bottom = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, mask.shape[0])
    left, right = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, mask.shape[1])
    out[top:bottom, left:right] = operation(mask[top:bottom, left:right])
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return around(mask, radius + 1, lambda m: ndi.binary_dilation(m, structure=disk(radius)))


def opening(mask: np.ndarray, radius: int) -> np.ndarray:
    return around(mask, radius + 1, lambda m: ndi.binary_opening(m, structure=disk(radius)))


def closing(mask: np.ndarray, radius: int) -> np.ndarray:
    return around(mask, 2 * radius + 2, lambda m: ndi.binary_closing(m, structure=disk(radius))) | mask


def within(mask: np.ndarray, distance: float) -> np.ndarray:
    """Pixels at most `distance` px from `mask`."""
    return around(mask, int(distance) + 1, lambda m: ndi.distance_transform_edt(~m) <= distance)


def central_object(mask: np.ndarray, min_area: int, max_distance: float) -> np.ndarray:
    """The component of `mask` nearest the image centre (by its nearest pixel; the larger one on a tie)."""
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    distance = ndi.minimum(centre_distance(mask.shape), labels, index=np.arange(1, n + 1))
    candidates = [(d, -areas[k + 1], k + 1) for k, d in enumerate(distance) if areas[k + 1] >= min_area and d <= max_distance]
    if not candidates:
        return np.zeros_like(mask)
    return labels == min(candidates)[2]


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def green_thresholds(green: np.ndarray) -> tuple[float, float] | None:
    """(chromatin | rest, rest | background) on the green channel; None for an image with too few grey levels."""
    try:
        low, high = threshold_multiotsu(green, classes=3)
    except ValueError:
        return None
    return float(low), float(high)


def split_touching(nucleus: np.ndarray) -> np.ndarray:
    """Two touching lymphocytes give one mask with a waist: split it by a watershed of the distance transform
    and keep the part nearest the centre -- but only where the cut is short against both parts (a kidney-shaped
    or cleaved nucleus is one object, its "waist" about as wide as itself)."""
    if regionprops(nucleus.astype(np.uint8))[0].solidity >= SPLIT_SOLIDITY:
        return nucleus
    distance = ndi.distance_transform_edt(nucleus)
    peaks = peak_local_max(distance, min_distance=8, threshold_abs=0.5 * distance.max(), labels=nucleus.astype(int),
                           num_peaks=2, exclude_border=False)
    if len(peaks) < 2:
        return nucleus
    markers = np.zeros(nucleus.shape, dtype=int)
    markers[tuple(peaks.T)] = (1, 2)
    parts = watershed(-distance, markers, mask=nucleus)
    areas = np.bincount(parts.ravel(), minlength=3)[1:]
    cut = (parts == 1) & dilate(parts == 2, 1)
    diameters = np.sqrt(4 * areas / np.pi)
    if areas.min() < SPLIT_MIN_FRACTION * areas.sum() or cut.sum() > SPLIT_MAX_CUT * diameters.min():
        return nucleus
    return nearest_part(parts)


def nearest_part(parts: np.ndarray) -> np.ndarray:
    distance = centre_distance(parts.shape)
    nearest = min((distance[parts == k].min(), k) for k in (1, 2))[1]
    return parts == nearest


def segment_nucleus(green: np.ndarray, dark_threshold: float) -> np.ndarray:
    dark = fill_holes(green < dark_threshold)
    nucleus = central_object(dark, MIN_NUCLEUS_AREA, MAX_CENTRE_DISTANCE)
    if not nucleus.any():
        return nucleus
    nucleus = opening(fill_holes(closing(nucleus, 2)), NUCLEUS_OPENING)
    if nucleus.sum() < MIN_NUCLEUS_AREA:
        return np.zeros_like(nucleus)
    return split_touching(largest_component(nucleus))


def optical_density(rgb: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Absorbance of each channel relative to the slide's own background: -ln(I / I_background), >= 0. It does
    not depend on the illumination or the camera's gain, only on how much stain the light went through."""
    return np.clip(-np.log(np.clip(rgb, 1.0, None) / np.clip(white, 1.0, None)), 0.0, None)


def cytoplasm_hue(od: np.ndarray) -> np.ndarray:
    """(OD red - OD blue) / OD total: high where the stain absorbs red light (basophilic cytoplasm, chromatin),
    low in the pink red cells; meaningless in the background, where OD is about 0."""
    return (od[..., 0] - od[..., 2]) / np.maximum(od.sum(-1), 1e-3)


def cytoplasm_threshold(hue: np.ndarray, candidates: np.ndarray, reference: np.ndarray) -> float:
    """Hue above which a pixel is cytoplasm, not red cell: Otsu between the two near the nucleus, but never
    below the image's own red cells plus three times their spread (a cell without visible cytoplasm must not
    grow into its red-cell neighbours). Without red cells in the border band, any stained pixel will do."""
    if reference.sum() < MIN_REFERENCE_PIXELS:
        return -np.inf  # no red cells around (a thin area, a drawn cell): every stained pixel nearby is cytoplasm
    red = hue[reference]
    level = np.median(red)
    floor = level + max(3.0 * 1.4826 * np.median(np.abs(red - level)), MIN_HUE_MARGIN)
    near = hue[candidates]
    try:
        otsu = threshold_otsu(near) if near.size >= 50 else floor
    except ValueError:
        otsu = floor
    return float(max(otsu, floor))


def segment_cell(od: np.ndarray, nucleus: np.ndarray, dark: np.ndarray) -> np.ndarray:
    smooth = ndi.gaussian_filter(od, (1.5, 1.5, 0))
    stained = smooth.sum(-1) > MIN_STAINED_OD
    hue = cytoplasm_hue(smooth)
    reach = within(nucleus, MAX_CYTOPLASM_REACH)
    candidates = reach & stained & ~nucleus & ~dark
    reference = border_band(nucleus.shape) & stained & ~dark & ~reach
    threshold = cytoplasm_threshold(hue, candidates, reference)
    grown = fill_holes(nucleus | (candidates & (hue > threshold)))
    grown = opening(grown, CELL_OPENING) | nucleus
    labels, _ = ndi.label(grown)
    keep = np.unique(labels[nucleus])
    return fill_holes(np.isin(labels, keep[keep > 0]))


def red_cell_diameter(red_cells: np.ndarray) -> float:
    """Median equivalent diameter of the single, whole red cells (convex, not cut by the image edge)."""
    filled = fill_holes(ndi.binary_opening(red_cells))  # central pallor
    diameters = []
    for region in regionprops(label(filled)):
        top, left, bottom, right = region.bbox
        if top == 0 or left == 0 or bottom == filled.shape[0] or right == filled.shape[1]:
            continue
        if RED_CELL_AREA[0] <= region.area <= RED_CELL_AREA[1] and region.solidity >= RED_CELL_SOLIDITY:
            diameters.append(region.equivalent_diameter_area)
    return float(np.median(diameters)) if diameters else float("nan")


def median_colour(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.median(rgb[mask], axis=0) if mask.any() else np.full(3, np.nan)


def segment(rgb: np.ndarray) -> Segmentation:
    """Segment one RGB image (H, W, 3), uint8 or float in 0-255."""
    rgb = np.asarray(rgb, dtype=np.float64)
    green = ndi.gaussian_filter(rgb[..., 1], SMOOTHING_SIGMA)
    empty = np.zeros(green.shape, dtype=bool)
    thresholds = green_thresholds(green)
    if thresholds is None:
        return Segmentation(empty, empty, empty, empty, median_colour(rgb, ~empty), float("nan"))
    dark, background = green < thresholds[0], green > thresholds[1]
    white = median_colour(rgb, background)
    nucleus = segment_nucleus(green, thresholds[0])
    cell = segment_cell(optical_density(rgb, white), nucleus, dark) if nucleus.any() else empty
    grown_cell = dilate(cell, 2)
    red_cells = ~background & ~dark & ~grown_cell
    return Segmentation(
        nucleus=nucleus, cell=cell, background=background, red_cells=red_cells,
        background_rgb=white,
        red_cell_diameter=red_cell_diameter(red_cells),
    )
