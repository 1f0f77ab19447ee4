"""Checks against the real DLMI challenge data, when you have it: set DLMI_DATA to its folder (the challenge
layout); by default ../shared/data/dlmi beside the repository is tried.

Skipped without the data (CI, a fresh clone). Nothing is copied into the repo: the embedding check reads a few
images after copying them to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, small_settings
from lymphocytosis.contract.layout import SPLIT_CSVS, discover_patients, list_cell_images, read_split_tables
from lymphocytosis.contract.store import load_bags
from lymphocytosis.extract.extraction import extract

DLMI_ROOT = Path(os.environ.get("DLMI_DATA") or REPO.parent / "shared" / "data" / "dlmi")
COLUMNS = ("ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT")

NO_DATA = ("the DLMI challenge data is not here; to run these checks on it, set DLMI_DATA=/path/to/dlmi (the folder "
           "holding trainset/ and testset/)")
pytestmark = pytest.mark.skipif(not (DLMI_ROOT / "trainset").is_dir(), reason=NO_DATA)


@pytest.fixture(scope="module")
def patients():
    read_split_tables(DLMI_ROOT, COLUMNS)  # every column the model needs is there
    return discover_patients(DLMI_ROOT)


def test_layout_reader_finds_120_train_and_10_test_patients(patients):
    by_split = {split: [p for p in patients if p.split == split] for split in SPLIT_CSVS}
    assert len(by_split["trainset"]) == 120 and len(by_split["testset"]) == 10
    assert len({p.patient_id for p in patients}) == 130
    for patient in patients[:5] + patients[-3:]:
        images = list_cell_images(patient.folder)
        assert images, f"{patient.patient_id}: no images in {patient.folder}"
        assert [p.name for p in images] == sorted(p.name for p in images)


def test_first_two_patients_embed(tmp_path, patients):
    """5 images of each of the first two trainset patients, copied to a temporary folder (links pointing outside a
    dataset are refused), at the default crop (112)."""
    chosen = [p for p in patients if p.split == "trainset"][:2]
    csv_lines = chosen[0].csv_path.read_text().splitlines()
    root = tmp_path / "dlmi_subset"
    split_dir = root / "trainset"
    split_dir.mkdir(parents=True)
    expected = {}
    for patient in chosen:
        folder = split_dir / patient.patient_id
        folder.mkdir()
        images = list_cell_images(patient.folder)[:5]
        for image in images:
            shutil.copyfile(image, folder / image.name)
        expected[patient.patient_id] = [p.name for p in images]
    (split_dir / SPLIT_CSVS["trainset"]).write_text(
        "\n".join([csv_lines[0]] + [csv_lines[p.row - 1] for p in chosen]) + "\n")

    out = tmp_path / "dlmi_subset.h5"
    summary = extract(root, out, small_settings(crop=112))
    assert summary.n_patients == 2 and summary.n_images == 10 and summary.n_skipped == 0
    _, bags = load_bags(out)
    assert sorted(bags) == sorted(p.patient_id for p in chosen)
    for patient_id, names in expected.items():
        bag = bags[patient_id]
        assert bag.filenames == names and bag.skipped == [] and bag.note == ""
        assert bag.embeddings.shape == (5, 1280) and np.isfinite(bag.embeddings).all()
        assert bag.embeddings.std(axis=0).max() > 0  # different cells, different rows
