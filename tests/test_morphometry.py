"""Segmentation and per-cell measurements on drawn cells of known geometry, and the stain controls' guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from lymphocytosis.errors import InputError
from lymphocytosis.extract.morphometry import MeasurementSettings, colour_names, measure, morphometry_names
from lymphocytosis.extract.segmentation import segment
from lymphocytosis.extract.stain import (
    REFERENCE_LAB_MEAN,
    REFERENCE_RED_CELL,
    REFERENCE_WHITE,
    check_method,
    normalise_array,
    slide_references,
)

BACKGROUND = (250, 226, 203)
RED_CELL = (178, 142, 162)
CYTOPLASM = (176, 160, 200)
NUCLEUS = (92, 46, 136)
SIZE = 224
CENTRE = (SIZE - 1) / 2


def disk_mask(centre: tuple[float, float], radius: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.indices((size, size))
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def drawn_cell(nucleus_radius: float = 22.0, cell_radius: float = 36.0, red_cell_radius: float = 15.0, seed: int = 0,
               extra_nuclei: tuple = (), tint: tuple = (0, 0, 0), noise: float = 3.0) -> np.ndarray:
    """A May-Grünwald-Giemsa-like image: cream background, pink red cells around the border, a blue cytoplasm
    disk and a purple nucleus disk at the centre (radii in px); `extra_nuclei` adds (row, col, radius) disks."""
    rng = np.random.default_rng(seed)
    image = np.empty((SIZE, SIZE, 3))
    image[:] = BACKGROUND
    for row in (20, 200):
        for col in range(20, SIZE, 45):
            image[disk_mask((row, col), red_cell_radius)] = RED_CELL
    for col in (20, 200):
        for row in (70, 115, 160):
            image[disk_mask((row, col), red_cell_radius)] = RED_CELL
    image[disk_mask((CENTRE, CENTRE), cell_radius)] = CYTOPLASM
    image[disk_mask((CENTRE, CENTRE), nucleus_radius)] = NUCLEUS
    for row, col, radius in extra_nuclei:
        image[disk_mask((row, col), radius)] = NUCLEUS
    image = image + np.asarray(tint) + rng.normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_nucleus_and_cell_areas_match_the_drawn_disks():
    seg = segment(drawn_cell(nucleus_radius=22, cell_radius=36))
    assert seg.found
    assert seg.nucleus.sum() == pytest.approx(np.pi * 22**2, rel=0.04)
    assert seg.cell.sum() == pytest.approx(np.pi * 36**2, rel=0.05)
    assert seg.red_cell_diameter == pytest.approx(30.0, rel=0.06)
    assert np.allclose(seg.background_rgb, BACKGROUND, atol=3)


def test_morphometry_vector_is_named_and_measures_the_drawn_geometry():
    settings = MeasurementSettings()
    values = dict(zip(settings.names(), measure(drawn_cell(nucleus_radius=20, cell_radius=40), settings)))
    assert list(values) == morphometry_names("px")
    assert values["nucleus_area_px2"] == pytest.approx(np.pi * 400, rel=0.04)
    assert values["nucleus_diameter_px"] == pytest.approx(40, rel=0.03)
    assert values["nc_ratio"] == pytest.approx((20 / 40) ** 2, rel=0.08)
    assert values["cytoplasm_width_px"] == pytest.approx(20, rel=0.1)
    assert values["nucleus_circularity"] > 0.85 and values["nucleus_solidity"] > 0.95
    assert values["nucleus_elongation"] == pytest.approx(1.0, abs=0.05)
    assert values["nucleus_to_red_cell_diameter"] == pytest.approx(40 / 30, rel=0.08)
    assert values["cytoplasm_basophilia"] > 0  # bluer than the red cells
    assert values["chromatin_density"] > values["cytoplasm_density"] / 3 > 0


def test_pixel_size_gives_micrometres():
    image = drawn_cell(nucleus_radius=20)
    px = dict(zip(MeasurementSettings().names(), measure(image, MeasurementSettings())))
    um_settings = MeasurementSettings(pixel_size_um=0.5)
    um = dict(zip(um_settings.names(), measure(image, um_settings)))
    assert um["nucleus_area_um2"] == pytest.approx(px["nucleus_area_px2"] * 0.25)
    assert um["nucleus_diameter_um"] == pytest.approx(px["nucleus_diameter_px"] * 0.5)
    assert um["nc_ratio"] == px["nc_ratio"]  # dimensionless: unchanged


def test_the_central_nucleus_is_chosen_and_touching_nuclei_are_split():
    off_centre = segment(drawn_cell(nucleus_radius=18, extra_nuclei=((60, 165, 18),)))
    assert off_centre.nucleus[int(CENTRE), int(CENTRE)] and not off_centre.nucleus[60, 165]
    doublet = segment(drawn_cell(nucleus_radius=20, cell_radius=20, extra_nuclei=((CENTRE, CENTRE + 38, 20),)))
    assert doublet.nucleus.sum() == pytest.approx(np.pi * 400, rel=0.1)


def test_an_image_without_a_cell_gives_missing_values_not_an_error():
    blank = np.full((SIZE, SIZE, 3), BACKGROUND, dtype=np.uint8)
    for settings in (MeasurementSettings(), MeasurementSettings(kind="colour")):
        values = measure(blank, settings)
        assert values.shape == (len(settings.names()),)
    assert np.isnan(measure(blank, MeasurementSettings())).all()


def test_colour_set_reads_the_drawn_colours():
    values = dict(zip(colour_names(), measure(drawn_cell(), MeasurementSettings(kind="colour"))))
    assert [values[f"nucleus_{c}"] for c in ("red", "green", "blue")] == pytest.approx(NUCLEUS, abs=4)
    assert [values[f"background_{c}"] for c in ("red", "green", "blue")] == pytest.approx(BACKGROUND, abs=4)


def test_settings_are_checked():
    with pytest.raises(InputError, match="--measure"):
        MeasurementSettings(kind="size").validate()
    with pytest.raises(InputError, match="--pixel-size"):
        MeasurementSettings(pixel_size_um=-1).validate()
    with pytest.raises(InputError, match="--stain"):
        check_method("macenko")


def test_grayscale_leaves_a_grey_image_unchanged_and_removes_hue():
    grey = np.repeat(drawn_cell().mean(-1, keepdims=True), 3, axis=-1)
    assert np.allclose(normalise_array(grey, "grayscale"), grey)
    out = normalise_array(drawn_cell(), "grayscale")
    assert np.allclose(out[..., 0], out[..., 2])


def test_slide_normalisation_removes_a_colour_cast_of_the_whole_slide():
    """The same cell on two slides that differ by a colour cast: after `slide`, both show the reference
    background and red cells, and the two images agree far better than before."""
    plain, cast = drawn_cell(seed=1), drawn_cell(seed=1, tint=(-12, 6, 14))
    before = np.abs(plain.astype(float) - cast).mean()
    a, b = normalise_array(plain, "slide"), normalise_array(cast, "slide")
    assert np.abs(a - b).mean() < before / 3
    white, red = slide_references(b)
    assert white == pytest.approx(REFERENCE_WHITE, abs=3)
    assert red == pytest.approx(REFERENCE_RED_CELL, abs=4)


def test_reinhard_maps_image_statistics_to_the_reference():
    from skimage.color import rgb2lab

    out = normalise_array(drawn_cell(tint=(-10, 5, 10)), "reinhard")
    mean = rgb2lab(np.clip(out, 0, 255) / 255).reshape(-1, 3).mean(0)
    assert mean == pytest.approx(REFERENCE_LAB_MEAN, abs=1.5)
