"""The drift check on synthetic data: an unshifted cohort is in distribution, a shifted one is flagged with the
reason of its shift; the reference in model.json is validated; a model saved without one still predicts.

The dataset is drawn by lymphocytosis.synthetic (real JPEG images, so the image signals are measured as on real
data); the embeddings are random vectors written through the store's own writer (no torch needed), with the
image file names of each patient."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FAKE_PROVENANCE, assert_one_line_error, run_main
from lymphocytosis.acquisition import PANEL
from lymphocytosis.cli import model as model_cli
from lymphocytosis.cli.predict import DRIFT_EXIT
from lymphocytosis.drift.check import check_drift
from lymphocytosis.drift.reference import DriftReference, fit_reference
from lymphocytosis.errors import InputError
from lymphocytosis.model.cohort import load_cohort

DIM = 8


def write_embeddings(root: Path, out: Path, seed: int = 0) -> Path:
    """Random embeddings, one row per image of each patient of `root` (its file names), in extract.py's format."""
    from lymphocytosis.contract.layout import discover_patients
    from lymphocytosis.contract.store import PatientBag
    from lymphocytosis.extract.parts import assemble

    rng = np.random.default_rng(seed)
    bags = {}
    for entry in discover_patients(root):
        names = sorted(p.name for p in entry.folder.glob("*.jpg"))
        bags[entry.patient_id] = PatientBag(entry.patient_id, entry.split, rng.normal(0, 1, (len(names), DIM)).astype(np.float32),
                                            names, [], "", listing_sha256="0" * 64, row_sha256=entry.row_sha256)
    assemble(out, list(bags), bags.__getitem__, DIM, FAKE_PROVENANCE, {"dataset_root": str(root.resolve()),
                                                                       "tool_version": "tests"})
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """30 training and 12 test patients of 3-5 drawn cells (JPEG quality 90), and their embeddings."""
    from lymphocytosis.synthetic import make_synthetic_dataset

    base = tmp_path_factory.mktemp("drift")
    root = make_synthetic_dataset(base / "dlmi", n_train=30, n_test=12, cells=(3, 5), seed=3)
    return root, write_embeddings(root, base / "embeddings.h5")


def changed_copy(root: Path, target: Path, change) -> Path:
    """`root` with `change` applied to every test image, saved under the same name (as another site's export)."""
    shutil.copytree(root, target)
    for path in sorted((target / "testset").glob("*/*.jpg")):
        with Image.open(path) as image:
            changed = change(image.convert("RGB"))
        changed.save(path, format="JPEG", quality=90)
    return target


@pytest.fixture(scope="module")
def reference(dataset):
    cohort = load_cohort(dataset[1], dataset[0])
    return fit_reference(cohort, cohort.labelled_ids)


def verdict_for(dataset, reference, root=None):
    target = load_cohort(dataset[1], root or dataset[0])
    return check_drift(reference, target, target.unlabelled_ids)


def test_unshifted_cohort_is_in_distribution(dataset, reference):
    verdict = verdict_for(dataset, reference)
    assert verdict.cohort_out is False, verdict.cohort_reasons
    assert verdict.line == "cohort: in distribution"
    assert verdict.distribution.count("out") <= 1  # 12 patients from the training site


@pytest.mark.parametrize(("change", "reason"), [
    (lambda image: PANEL["jpeg40"](image), "JPEG compression"),
    (lambda image: PANEL["darker"](image), "exposure"),
    (lambda image: PANEL["blur2"](image), "focus"),
    (lambda image: PANEL["wb_warm"](image), "white balance"),
])
def test_shifted_cohort_is_flagged_with_its_reason(dataset, reference, tmp_path, change, reason):
    root = dataset[0]
    if reason == "JPEG compression":  # the whole file at quality 40, not re-saved at 90
        target = changed_copy(root, tmp_path / "dlmi", lambda image: image)
        for path in sorted((target / "testset").glob("*/*.jpg")):
            Image.open(path).convert("RGB").save(path, format="JPEG", quality=40)
    else:
        target = changed_copy(root, tmp_path / "dlmi", change)
    verdict = verdict_for(dataset, reference, target)
    assert verdict.cohort_out is True
    assert reason in verdict.cohort_reasons, verdict.cohort_reasons
    assert verdict.line.startswith("cohort: OUT OF DISTRIBUTION (") and reason in verdict.line


def test_clinical_values_outside_the_training_range(dataset, reference, tmp_path):
    root = dataset[0]
    target = shutil.copytree(root, tmp_path / "dlmi")
    csv = target / "testset" / "testset_data.csv"
    lines = csv.read_text().splitlines()
    lines[1:] = [",".join([*row.split(",")[:-1], "9000"]) for row in lines[1:]]
    csv.write_text("\n".join(lines) + "\n")
    # the embeddings record the original rows: compare the new rows' values through a cohort read as if re-extracted
    cohort = load_cohort(write_embeddings(target, tmp_path / "e.h5"), target)
    verdict = check_drift(reference, cohort, cohort.unlabelled_ids)
    assert set(verdict.distribution) == {"out"}
    assert all("lymphocyte count outside training range" in r for r in verdict.reasons)
    assert "lymphocyte count outside training range" in verdict.cohort_reasons


def test_embeddings_unlike_the_training_cells_without_images(dataset, reference, tmp_path):
    """Embeddings copied without their images: the check uses the embeddings and clinical values, and says so."""
    root, embeddings = dataset
    target = shutil.copytree(root, tmp_path / "dlmi", ignore=shutil.ignore_patterns("*.jpg"))
    moved = load_cohort(embeddings, target)
    for patient_id in moved.unlabelled_ids:
        moved.primary.bags[patient_id] = moved.primary.bags[patient_id] * 4.0
    verdict = check_drift(reference, moved, moved.unlabelled_ids)
    assert verdict.cohort_reasons == ["cell appearance"]
    assert any("images could not be read" in note for note in verdict.notes)


def test_reference_round_trip_and_validation(reference):
    document = json.loads(json.dumps(reference.to_dict()))
    again = DriftReference.from_dict(document)
    assert again.signals == reference.signals and again.clinical == reference.clinical
    assert np.array_equal(again.embedding.mean, reference.embedding.mean)
    bad = [("signals", {"sharpness": {"median": 1.0, "scale": 0.0}}, "scale must be positive"),
           ("signals", {"sharpness": {"median": float("nan"), "scale": 1.0}}, "finite"),
           ("signals", {"colour": {"median": 1.0, "scale": 1.0}}, "drift_reference.signals"),
           ("embedding", {**document["embedding"], "std": document["embedding"]["std"][:-1]}, "dimensions"),
           ("embedding", {**document["embedding"], "mean": "x"}, "embedding.mean"),
           ("clinical", {"age": [90, 10]}, "low <= high"),
           ("version", 99, "version")]
    for key, value, fragment in bad:
        with pytest.raises(InputError, match=fragment):
            DriftReference.from_dict({**document, key: value})
    with pytest.raises(InputError):
        DriftReference.from_dict({k: v for k, v in document.items() if k != "clinical"})


def fit_model(dataset, model_dir: Path):
    root, embeddings = dataset
    result = run_main(model_cli.main, ["fit", "--embeddings", str(embeddings), "--root", str(root), "--model-dir",
                                       str(model_dir), "--params", "default"])
    assert result.code == 0, result.stderr
    return model_dir


def test_predict_writes_the_verdict_and_strict_drift_exits_nonzero(dataset, tmp_path):
    import pandas as pd

    root, embeddings = dataset
    model_dir = fit_model(dataset, tmp_path / "model")
    assert "drift_reference" in json.loads((model_dir / "model.json").read_text())
    out, sub = tmp_path / "p.csv", tmp_path / "s.csv"
    args = ["predict", "--embeddings", str(embeddings), "--model-dir", str(model_dir), "--out", str(out),
            "--submission", str(sub)]
    result = run_main(model_cli.main, [*args, "--root", str(root), "--strict-drift"])
    assert result.code == 0, result.stderr
    assert "cohort: in distribution" in result.stdout
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns[-2:]) == ["DISTRIBUTION", "DRIFT_REASON"] and set(frame["DISTRIBUTION"]) <= {"in", "out"}
    shifted = changed_copy(root, tmp_path / "dlmi", PANEL["darker"])
    for strict, code in ((False, 0), (True, DRIFT_EXIT)):
        result = run_main(model_cli.main, [*args, "--root", str(shifted), *(["--strict-drift"] if strict else [])])
        assert result.code == code, result.stderr
        assert "cohort: OUT OF DISTRIBUTION (" in result.stdout and "exposure" in result.stdout
        assert out.is_file() and "out" in set(pd.read_csv(out, keep_default_na=False)["DISTRIBUTION"])


def test_model_saved_without_a_reference_still_predicts(dataset, tmp_path):
    import pandas as pd

    root, embeddings = dataset
    model_dir = fit_model(dataset, tmp_path / "model")
    path = model_dir / "model.json"
    document = json.loads(path.read_text())
    del document["drift_reference"]
    path.write_text(json.dumps(document))
    out = tmp_path / "p.csv"
    args = ["predict", "--embeddings", str(embeddings), "--root", str(root), "--model-dir", str(model_dir),
            "--out", str(out), "--submission", str(tmp_path / "s.csv")]
    result = run_main(model_cli.main, args)
    assert result.code == 0, result.stderr
    assert "no drift reference" in result.stdout
    assert set(pd.read_csv(out)["DISTRIBUTION"]) == {"unknown"}
    assert run_main(model_cli.main, [*args, "--strict-drift"]).code == DRIFT_EXIT
    document["drift_reference"] = {"version": 1}
    path.write_text(json.dumps(document))
    assert_one_line_error(run_main(model_cli.main, args), "model.json", "drift_reference")


def test_a_patient_without_cells_is_unknown_not_in(dataset, reference, tmp_path):
    """Nothing about its cells can be checked (no images, no embeddings): `in` would claim they were."""
    root, embeddings = dataset
    target = shutil.copytree(root, tmp_path / "dlmi", ignore=shutil.ignore_patterns("*.jpg"))
    moved = load_cohort(embeddings, target)
    empty = moved.unlabelled_ids[0]
    moved.primary.bags[empty] = moved.primary.bags[empty][:0]
    verdict = check_drift(reference, moved, moved.unlabelled_ids)
    row = verdict.ids.index(empty)
    assert (verdict.distribution[row], verdict.reasons[row]) == ("unknown", "no cell images to check")
    assert set(verdict.distribution) - {"unknown"} <= {"in", "out"}
