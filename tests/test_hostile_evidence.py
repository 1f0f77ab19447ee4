"""The evidence rule: a patient without a readable cell image is never given an image-based probability.

`predict` refuses such patients by default, naming them and why; `--clinical-only-fallback` predicts them with
the clinical-only model `fit` saved beside the image model, and predictions.csv says for every patient what
its call rests on. `cv` and `fit` refuse when more than a small share of labelled patients have no cells.
Symbolic links placed in the dataset are followed (their targets fingerprinted), or refused on request.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import model as model_cli
from conftest import assert_one_line_error, run_main, write_fake_embeddings, write_small_params
from lymphocytosis.contract.images import scan_folder
from lymphocytosis.evidence import reason_without_cells

EMPTY = ("F4", "T0", "T2")  # 1 of 24 labelled patients (4%): under the 5% bar


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("evidence")
    embeddings = write_fake_embeddings(base, empty=EMPTY)

    write_small_params(base / "params.json", embeddings)
    result = fit(base)
    assert result.code == 0, result.stderr
    return base


def fit(base: Path, *extra: str, embeddings: Path | None = None):
    return run_main(model_cli.main, ["fit", "--embeddings", str(embeddings or base / "embeddings.h5"), "--params",
                                     str(base / "params.json"), "--model-dir", str(base / "model"), *extra])


def predict(base: Path, out: Path, *extra: str):
    return run_main(model_cli.main, ["predict", "--embeddings", str(base / "embeddings.h5"), "--model-dir",
                                     str(base / "model"), "--out", str(out / "p.csv"), "--submission",
                                     str(out / "s.csv"), *extra])


def test_predict_refuses_patients_without_cells_naming_them(fitted, tmp_path):
    result = predict(fitted, tmp_path)
    assert_one_line_error(result, "2 patient(s) to predict have no readable cell image", "T0 (", "T2 (",
                          "--clinical-only-fallback")
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "s.csv").exists()


def test_fallback_predicts_them_from_the_clinical_model_and_marks_every_row(fitted, tmp_path):
    from lymphocytosis.model.cohort import load_cohort
    from lymphocytosis.model.fallback import load_clinical_model
    from lymphocytosis.model.persistence import load_model

    result = predict(fitted, tmp_path, "--clinical-only-fallback")
    assert result.code == 0, result.stderr
    table = pd.read_csv(tmp_path / "p.csv").set_index("ID")
    assert list(table.columns[:2]) == ["LABEL", "PROBABILITY"]
    assert list(table.columns[-4:]) == ["OPERATING_POINT", "EVIDENCE", "DISTRIBUTION", "DRIFT_REASON"]
    assert dict(table["EVIDENCE"]) == {"T0": "clinical only", "T1": "images+clinical", "T2": "clinical only",
                                       "T3": "images+clinical"}
    cohort = load_cohort(fitted / "embeddings.h5")
    model = load_model(fitted / "model")
    clinical = load_clinical_model(fitted / "model", model)
    assert not clinical.spec.uses_images
    expected = clinical.predict_proba(cohort, ["T0", "T2"]).probabilities.round(6)
    assert list(table.loc[["T0", "T2"], "PROBABILITY"]) == pytest.approx(list(expected), abs=1e-9)
    expected = model.predict_proba(cohort, ["T1", "T3"]).probabilities.round(6)
    assert list(table.loc[["T1", "T3"], "PROBABILITY"]) == pytest.approx(list(expected), abs=1e-9)
    assert list(pd.read_csv(tmp_path / "s.csv").columns) == ["Id", "Predicted"]  # the challenge's file is unchanged


def test_fallback_patients_are_labelled_at_the_clinical_models_own_point(fitted, tmp_path, caplog):
    """The image model's sens95 threshold means nothing for the clinical-only model's probabilities: a patient
    predicted from the clinical attributes alone is labelled at that model's balanced threshold (it has no sens95),
    and its row says so."""
    from lymphocytosis.model.persistence import load_model

    model = load_model(fitted / "model")
    assert "sens95" in model.decision.rule.operating_points.names
    threshold = model.decision.rule.operating_points.threshold("sens95")
    result = predict(fitted, tmp_path, "--clinical-only-fallback", "--operating-point", "sens95")
    assert result.code == 0, result.stderr
    assert "clinical-only model has no operating point sens95" in caplog.text and "balanced threshold" in caplog.text
    table = pd.read_csv(tmp_path / "p.csv").set_index("ID")
    assert dict(table["OPERATING_POINT"]) == {"T0": "balanced", "T1": "sens95", "T2": "balanced", "T3": "sens95"}
    imaged, fallback = table.loc[["T1", "T3"]], table.loc[["T0", "T2"]]
    assert list(imaged["LABEL"]) == list((imaged["PROBABILITY"] >= threshold - 5e-7).astype(int))
    assert list(fallback["LABEL"]) == list((fallback["PROBABILITY"] >= 0.5).astype(int))
    if "RECALIBRATED_PROBABILITY" in table:  # the image model's recalibration is not applied to another model's
        assert fallback["RECALIBRATED_PROBABILITY"].isna().all() and imaged["RECALIBRATED_PROBABILITY"].notna().all()


def test_fallback_needs_a_model_saved_with_its_clinical_model(fitted, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(fitted / "model", model_dir)
    for folder in model_dir.glob("clinical-only-*"):
        shutil.rmtree(folder)
    result = run_main(model_cli.main, ["predict", "--embeddings", str(fitted / "embeddings.h5"), "--model-dir",
                                       str(model_dir), "--out", str(tmp_path / "p.csv"), "--submission",
                                       str(tmp_path / "s.csv"), "--clinical-only-fallback"])
    assert_one_line_error(result, "holds no clinical-only model saved with this model", "refit")


def test_refit_replaces_the_clinical_model_it_names(fitted, tmp_path):
    base = tmp_path / "b"
    shutil.copytree(fitted, base)
    (base / "params.json").write_text((base / "params.json").read_text().replace('"num_iterations": 30',
                                                                                 '"num_iterations": 12'))
    assert fit(base).code == 0
    assert len(list((base / "model").glob("clinical-only-*"))) == 1
    assert predict(base, tmp_path, "--clinical-only-fallback").code == 0


@pytest.mark.parametrize("command", ["cv", "fit"])
def test_training_refuses_too_many_patients_without_cells(tmp_path, command):
    embeddings = write_fake_embeddings(tmp_path, empty=("F1", "F5", "F9"))  # 3 of 24: 12%
    args = [command, "--embeddings", str(embeddings), "--params", "default"]
    args += ["--cv-dir", str(tmp_path / "cv")] if command == "cv" else ["--model-dir", str(tmp_path / "m")]
    result = run_main(model_cli.main, args)
    assert_one_line_error(result, "3 of 24 labelled patients (12%) have no readable cell image",
                          "more than --max-without-cells 0.05 allows", "F1 (folder holds no image files)", "F9 (")
    assert not (tmp_path / "cv").exists() and not (tmp_path / "m").exists()
    assert run_main(model_cli.main, [*args, "--max-without-cells", "0.2", "--folds", "3", "--repeats", "1"]
                    if command == "cv" else [*args, "--max-without-cells", "0.2"]).code == 0


def test_max_without_cells_is_a_share():
    result = run_main(model_cli.main, ["fit", "--max-without-cells", "5"])
    assert_one_line_error(result, "argument --max-without-cells: 5 is out of range", exact_one_line=True)


@pytest.mark.parametrize("note, skipped, reason", [
    ("folder missing", [], "folder missing"),
    ("no images", [], "folder holds no image files"),
    ("folder is a symbolic link, refused (--refuse-links)", [], "folder is a symbolic link, refused"),
    ("", [{"file": "a.jpg", "reason": "symbolic link, refused (--refuse-links)"}], "all 1 images are links, refused"),
    ("", [{"file": "a.jpg", "reason": "blank image"}, {"file": "b.jpg", "reason": "too small"}],
     "all 2 images unreadable (e.g. a.jpg: blank image)"),
])
def test_why_a_patient_has_no_cells(note, skipped, reason):
    assert reason_without_cells(note, skipped).startswith(reason)


# --- links placed in the dataset ---------------------------------------------------------------------------------


def test_linked_folder_and_image_are_listed_and_their_targets_fingerprinted(tmp_path):
    root = tmp_path / "dlmi"
    archive = tmp_path / "archive"
    for folder in (archive / "a", archive / "b", root / "trainset" / "P2"):
        folder.mkdir(parents=True)
    for folder, content in ((archive / "a", b"image a"), (archive / "b", b"image b")):
        (folder / "x.jpg").write_bytes(content)
        os.utime(folder / "x.jpg", ns=(10**18, 10**18))  # same name, size and time: only the content differs
    patient = root / "trainset" / "P1"
    patient.symlink_to(archive / "a", target_is_directory=True)
    (root / "trainset" / "P2" / "y.jpg").symlink_to(archive / "a" / "x.jpg")
    first = scan_folder(patient, root)
    assert [p.name for p in first.images] == ["x.jpg"] and first.note == ""
    image = scan_folder(root / "trainset" / "P2", root)
    assert [p.name for p in image.images] == ["y.jpg"]
    patient.unlink()
    patient.symlink_to(archive / "b", target_is_directory=True)
    assert scan_folder(patient, root).fingerprint != first.fingerprint  # relinked to other images: embedded again
    (root / "trainset" / "P2" / "y.jpg").unlink()
    (root / "trainset" / "P2" / "y.jpg").symlink_to(archive / "b" / "x.jpg")
    assert scan_folder(root / "trainset" / "P2", root).fingerprint != image.fingerprint


def test_refused_links_are_skipped_and_recorded(tmp_path):
    root = tmp_path / "dlmi"
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "x.jpg").write_bytes(b"x")
    (root / "trainset" / "P2").mkdir(parents=True)
    (root / "trainset" / "P1").symlink_to(tmp_path / "archive", target_is_directory=True)
    (root / "trainset" / "P2" / "y.jpg").symlink_to(tmp_path / "archive" / "x.jpg")
    folder = scan_folder(root / "trainset" / "P1", root, follow_links=False)
    assert folder.images == [] and folder.note == "folder is a symbolic link, refused (--refuse-links)"
    image = scan_folder(root / "trainset" / "P2", root, follow_links=False)
    assert image.images == [] and image.skipped == [{"file": "y.jpg", "reason": "symbolic link, refused (--refuse-links)"}]


def test_plain_folders_keep_the_earlier_listing_fingerprint(tmp_path):
    """An extraction made before content fingerprints (names, sizes, times) is recognised: no patient is embedded
    again, and the rerun records the content fingerprint."""
    import hashlib

    folder = tmp_path / "dlmi" / "trainset" / "P1"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"abc")
    stat = (folder / "a.jpg").stat()
    expected = hashlib.sha256(f"a.jpg\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()).hexdigest()
    assert scan_folder(folder, tmp_path / "dlmi").legacy_fingerprint == expected


def test_stain_cv_must_come_from_stain_normalised_embeddings(fitted, tmp_path):
    """Else the report would write "+0.257 survives stain normalisation" about a CV without any."""
    design = ["--embeddings", str(fitted / "embeddings.h5"), "--params", str(fitted / "params.json"), "--folds", "3",
              "--repeats", "1", "--max-without-cells", "0.1"]
    for name in ("cv", "cv-unstained"):
        assert run_main(model_cli.main, ["cv", *design, "--cv-dir", str(tmp_path / name)]).code == 0
    result = run_main(model_cli.main, ["report", *design, "--cv-dir", str(tmp_path / "cv"), "--patients", "none",
                                       "--out-dir", str(tmp_path / "report"), "--stain-cv", str(tmp_path / "cv-unstained")])
    assert_one_line_error(result, f"--stain-cv {tmp_path / 'cv-unstained'}: cross-validation on embeddings extracted "
                          "without stain normalisation (fake-backbone: --stain none)")
    assert not (tmp_path / "report").exists()
