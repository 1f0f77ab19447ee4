"""`extract.py --stain`: the control reaches the embeddings and the provenance, and does what it guarantees."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_morphometry import drawn_cell

from conftest import pin_torch_threads, small_settings, write_dataset
from lymphocytosis.contract.provenance import same
from lymphocytosis.contract.store import load_bags
from lymphocytosis.extract.extraction import extract


@pytest.fixture(scope="module")
def grey_and_colour(tmp_path_factory):
    """Two patients: one with a coloured cell image, one with the same image in grey (R = G = B)."""
    colour = drawn_cell(seed=3)
    grey = np.repeat(np.rint(colour @ np.array([0.299, 0.587, 0.114]))[..., None], 3, axis=-1).astype(np.uint8)
    return write_dataset(tmp_path_factory.mktemp("stain") / "dlmi", {"trainset": {
        "COLOUR": [("000000.png", Image.fromarray(colour))], "GREY": [("000000.png", Image.fromarray(grey))]}})


def test_grayscale_changes_the_coloured_cell_only_and_is_recorded(grey_and_colour, tmp_path):
    pin_torch_threads()
    files = {}
    for stain in ("none", "grayscale"):
        files[stain] = tmp_path / f"{stain}.h5"
        extract(grey_and_colour, files[stain], small_settings(stain=stain))
    (plain_prov, plain), (grey_prov, greyed) = load_bags(files["none"]), load_bags(files["grayscale"])
    np.testing.assert_array_equal(plain["GREY"].embeddings, greyed["GREY"].embeddings)
    assert np.abs(plain["COLOUR"].embeddings - greyed["COLOUR"].embeddings).max() > 1e-2
    assert "stain" not in json.loads(plain_prov["preprocessing"])  # files from before stain controls stay comparable
    assert json.loads(grey_prov["preprocessing"])["stain"] == "grayscale"
    assert not same(plain_prov, grey_prov)


def test_slide_normalisation_runs_through_extraction(grey_and_colour, tmp_path):
    pin_torch_threads()
    extract(grey_and_colour, tmp_path / "slide.h5", small_settings(stain="slide"))
    provenance, bags = load_bags(tmp_path / "slide.h5")
    assert json.loads(provenance["preprocessing"])["stain"] == "slide"
    assert np.isfinite(bags["COLOUR"].embeddings).all()
