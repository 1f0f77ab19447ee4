"""Several embeddings files of the same patients (e.g. lite0 and DinoBloom): each gets its own cross-fitted cell
score, the report groups importance by backbone, and models, tuned settings and results are tied to the set."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import model as model_cli
from conftest import assert_one_line_error, run_main
from lymphocytosis.contract.integrity import bag_digest
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.feature_spec import FeatureSpec
from lymphocytosis.model.features import fit_features
from lymphocytosis.model.tables import CELL_SCORE


@pytest.fixture(scope="module")
def second(fake_embeddings, tmp_path_factory) -> Path:
    """The same patients and cells as `fake_embeddings`, 'embedded' by another backbone (other values)."""
    path = tmp_path_factory.mktemp("second") / "other-backbone.h5"
    shutil.copyfile(fake_embeddings, path)
    rng = np.random.default_rng(5)
    with h5py.File(path, "r+") as handle:
        handle.attrs["model"] = "fake-b"
        handle.attrs["dim"] = 8  # the dimension every bag is checked against
        handle.attrs["weights_sha256"] = "1" * 64
        for patient_id, group in handle["patients"].items():
            values = group["embeddings"][()]
            del group["embeddings"]
            values = (values[:, :8] * 2 + rng.normal(size=(len(values), 8))).astype(np.float32)
            group.create_dataset("embeddings", data=values)
            names = [n.decode() for n in group["filenames"][()]]
            group.attrs["content_sha256"] = bag_digest(dict(handle.attrs), patient_id, values, names)  # as extract.py would
    return path


def test_each_backbone_gets_its_own_cell_score(fake_embeddings, second):
    cohort = load_cohort([fake_embeddings, second])
    assert [s.name for s in cohort.sets] == ["fake-backbone", "fake-b"] and cohort.sets[1].dim == 8
    fitted, table = fit_features(cohort, FeatureSpec(), cohort.labelled_ids)
    scores = [(c.backbone, c.statistic) for c in table.columns if c.family == CELL_SCORE]
    assert scores == [(b, s) for b in ("fake-backbone", "fake-b") for s in ("mean", "q50", "q90")]
    assert set(fitted.cell_score) == {"fake-backbone", "fake-b"} and len(fitted.cell_score["fake-b"].beta) == 8
    assert set(table.cell_scores) == {"fake-backbone", "fake-b"}


def test_cv_and_report_with_two_backbones(fake_embeddings, second, tmp_path):
    args = ["--embeddings", str(fake_embeddings), "--embeddings", str(second), "--params", "default", "--folds", "3",
            "--repeats", "1", "--cv-dir", str(tmp_path / "cv")]
    result = run_main(model_cli.main, ["cv", *args])
    assert result.code == 0, result.stderr
    result = run_main(model_cli.main, ["report", *args, "--out-dir", str(tmp_path / "report"), "--patients", "none"])
    assert result.code == 0, result.stderr
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "By embeddings file" in page and "images: fake-backbone" in page and "images: fake-b" in page
    assert "cell score, median [fake-b]" in page


def test_a_model_of_two_backbones_needs_both(fake_embeddings, second, tmp_path):
    model = tmp_path / "model"
    assert run_main(model_cli.main, ["fit", "--embeddings", str(fake_embeddings), "--embeddings", str(second),
                                     "--params", "default", "--model-dir", str(model)]).code == 0
    result = run_main(model_cli.main, ["predict", "--embeddings", str(fake_embeddings), "--model-dir", str(model),
                                       "--out", str(tmp_path / "p.csv"), "--submission", str(tmp_path / "s.csv")])
    assert_one_line_error(result, "embeddings fake-backbone, fake-b vs fake-backbone")
    result = run_main(model_cli.main, ["predict", "--embeddings", str(fake_embeddings), "--embeddings", str(second),
                                       "--model-dir", str(model), "--out", str(tmp_path / "p.csv"), "--submission",
                                       str(tmp_path / "s.csv")])
    assert result.code == 0, result.stderr


def test_files_of_other_cells_are_refused(fake_embeddings, second, tmp_path):
    other = tmp_path / "other.h5"
    shutil.copyfile(second, other)
    with h5py.File(other, "r+") as handle:
        names = handle["patients/F0/filenames"][()]
        del handle["patients/F0/filenames"]
        handle["patients/F0"].create_dataset("filenames", data=np.array([b"x" + n for n in names], dtype=object),
                                             dtype=h5py.string_dtype("utf-8"))
        handle["patients/F0"].attrs["content_sha256"] = bag_digest(  # a genuine file of other cells: its own digest
            dict(handle.attrs), "F0", handle["patients/F0/embeddings"][()], ["x" + n.decode() for n in names])
    result = run_main(model_cli.main, ["cv", "--embeddings", str(fake_embeddings), "--embeddings", str(other)])
    assert_one_line_error(result, str(other), "patient F0's images differ")


def test_the_same_file_twice_is_refused(fake_embeddings):
    result = run_main(model_cli.main, ["cv", "--embeddings", str(fake_embeddings), "--embeddings", str(fake_embeddings)])
    assert_one_line_error(result, "given twice")
