"""Hostile inputs to stage 2 (model.py, tune.py): damaged or tampered files, wrong arguments, outputs aimed at
inputs. Each case asserts the exact outcome: one `error:` line naming the file/patient/setting and exit code 2
(no traceback), or a verified result; and that nothing the user had was lost.

Runs on hand-made embeddings (`write_fake_embeddings`, no torch); stage 1's hostile cases are in
test_hostile_extraction.py. The README's "What it refuses and why" summarises both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import model as model_cli
import tune as tune_cli
from conftest import assert_one_line_error, fitted_small_model, run_main, write_fake_embeddings


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Fake embeddings (24 + 4 patients), a parameters file that lets trees split, a fitted model."""
    return fitted_small_model(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def copy(base, tmp_path) -> Path:
    """A private copy of the dataset, embeddings, parameters and model, free to damage."""
    for name in ("dlmi", "model"):
        shutil.copytree(base / name, tmp_path / name)
    for name in ("embeddings.h5", "params.json"):
        shutil.copyfile(base / name, tmp_path / name)
    return tmp_path


def cv(copy: Path, *extra: str):
    root = [] if "--root" in extra else ["--root", str(copy / "dlmi")]
    return run_main(model_cli.main, ["cv", "--embeddings", str(copy / "embeddings.h5"), "--params",
                                     str(copy / "params.json"), "--folds", "3", "--repeats", "1",
                                     "--cv-dir", str(copy / "cv"), *root, *extra])


def predict(copy: Path, *extra: str, embeddings: Path | None = None):
    return run_main(model_cli.main, ["predict", "--embeddings", str(embeddings or copy / "embeddings.h5"),
                                     "--root", str(copy / "dlmi"), "--model-dir", str(copy / "model"),
                                     "--out", str(copy / "p.csv"), "--submission", str(copy / "s.csv"), *extra])


# --- arguments ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["cv", "--repeats", "0"], "argument --repeats: 0 is out of range"),
    (["cv", "--folds", "1"], "argument --folds: 1 is out of range"),
    (["cv", "--seed", "-3"], "argument --seed: -3 is out of range"),
    (["cv", "--folds", "three"], "argument --folds: 'three' is not an integer"),
    (["report", "--repeats", "100000"], "argument --repeats: 100000 is out of range"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_model_arguments(args, fragment):
    assert_one_line_error(run_main(model_cli.main, args), fragment, exact_one_line=True)


@pytest.mark.parametrize("args, fragment", [
    (["--trials", "0"], "argument --trials: 0 is out of range"),
    (["--timeout", "-1"], "argument --timeout: -1 is out of range"),
    (["--timeout", "inf"], "argument --timeout: inf is out of range"),
    (["--outer-folds", "1"], "argument --outer-folds: 1 is out of range"),
])
def test_tune_arguments(args, fragment):
    assert_one_line_error(run_main(tune_cli.main, args), fragment, exact_one_line=True)


# --- the embeddings file --------------------------------------------------------------------------------------------


def tamper(path: Path, patient: str, dataset: str, value) -> None:
    with h5py.File(path, "r+") as handle:
        del handle[f"patients/{patient}/{dataset}"]
        handle[f"patients/{patient}"].create_dataset(dataset, data=value)


@pytest.mark.parametrize("change, fragments", [
    (lambda h5: tamper(h5, "T1", "embeddings", np.full((3, 16), np.nan, np.float32)[:len(names(h5, "T1"))]),
     ["patient T1", "NaN or infinite"]),
    (lambda h5: tamper(h5, "T1", "embeddings", np.full((len(names(h5, "T1")), 16), 1e30, np.float32)),
     ["patient T1", "values up to 1e+30"]),
    (lambda h5: tamper(h5, "F2", "embeddings", np.zeros((len(names(h5, "F2")), 16), np.int32)),
     ["patient F2", "not floating point"]),
    (lambda h5: tamper(h5, "F2", "embeddings", np.zeros((1, 16), np.float32)), ["patient F2", "embeddings of shape"]),
    (lambda h5: tamper(h5, "F3", "embeddings", np.zeros((len(names(h5, "F3")), 8), np.float32)),
     ["patient F3", "8 dimensions where the file records 16"]),
    (lambda h5: tamper(h5, "F0", "filenames", np.array(["../../x.jpg"] * len(names(h5, "F0")), dtype=object)),
     ["patient F0", "'../../x.jpg' is not a plain name"]),
    (lambda h5: tamper(h5, "F0", "filenames", np.array(["/etc/passwd"] * len(names(h5, "F0")), dtype=object)),
     ["patient F0", "'/etc/passwd' is not a plain name"]),
    (lambda h5: tamper(h5, "F0", "filenames", np.array(["a.jpg"] * len(names(h5, "F0")), dtype=object)),
     ["patient F0", "listed twice"]),
    (lambda h5: set_attr(h5, "patients/F4", "split", "elsewhere"), ["patient F4", "split 'elsewhere'"]),
    (lambda h5: set_attr(h5, "patients/F4", "skipped", "{not json"), ["patient F4", "damaged embeddings"]),
    (lambda h5: set_attr(h5, "/", "format", "lymphocytosis-embeddings/1"), ["older version", "--overwrite"]),
    (lambda h5: set_attr(h5, "/", "complete", False), ["incomplete embeddings file"]),
    (lambda h5: set_attr(h5, "/", "model", 3), ["damaged provenance", "model"]),
    (lambda h5: delete(h5, "patients/F5"), ["no embeddings for patient F5"]),
])
def test_damaged_embeddings_are_refused(copy, change, fragments):
    h5 = copy / "embeddings.h5"
    change(h5)
    assert_one_line_error(predict(copy), str(h5), *fragments)
    assert not (copy / "p.csv").exists()


def names(path: Path, patient: str) -> list:
    with h5py.File(path, "r") as handle:
        return list(handle[f"patients/{patient}/filenames"][()])


def set_attr(path: Path, where: str, key: str, value) -> None:
    with h5py.File(path, "r+") as handle:
        handle[where].attrs[key] = value


def delete(path: Path, where: str) -> None:
    with h5py.File(path, "r+") as handle:
        del handle[where]


@pytest.mark.parametrize("content, fragment", [
    (b"\x89HDF random bytes " * 100, "not a readable HDF5 file"),
    (b"", "not a readable HDF5 file"),
])
def test_embeddings_of_random_bytes(copy, content, fragment):
    (copy / "embeddings.h5").write_bytes(content)
    assert_one_line_error(cv(copy), str(copy / "embeddings.h5"), fragment)


def test_truncated_embeddings_file(copy):
    h5 = copy / "embeddings.h5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    assert_one_line_error(cv(copy), str(h5))


# --- the CSVs beside the embeddings -----------------------------------------------------------------------------------


def edit_csv(copy: Path, split: str, old: str, new: str) -> Path:
    csv = copy / "dlmi" / split / ("trainset_true.csv" if split == "trainset" else "testset_data.csv")
    text = csv.read_text()
    assert old in text
    csv.write_text(text.replace(old, new, 1))
    return csv


def test_root_of_another_dataset_with_the_same_ids_is_refused(copy, tmp_path_factory):
    other = write_fake_embeddings(tmp_path_factory.mktemp("other"), seed=7)  # same IDs, other clinical values
    result = cv(copy, "--root", str(other.parent / "dlmi"))
    line = assert_one_line_error(result, str(other.parent / "dlmi"), "differ from those", "F0")
    assert "is this the dataset it was extracted from" in line


def test_edited_label_after_extraction_is_refused(copy):
    csv = edit_csv(copy, "trainset", "\nF1,1,", "\nF1,0,")
    assert_one_line_error(cv(copy), "CSV rows of patients F1 (1 of 28)", "rerun `python extract.py --root")
    assert csv.is_file()


def test_testset_row_with_a_label_is_refused(copy):
    csv = edit_csv(copy, "testset", "\nT2,-1,", "\nT2,1,")
    assert_one_line_error(cv(copy), str(csv), "row 4", "patient T2", "column LABEL", "'1' in the testset")


def test_trainset_row_without_a_label_is_refused(copy):
    csv = edit_csv(copy, "trainset", "\nF3,", "\nF3,-1,").replace if False else None
    csv = copy / "dlmi" / "trainset" / "trainset_true.csv"
    lines = csv.read_text().splitlines()
    lines[4] = ",".join([lines[4].split(",")[0], "-1", *lines[4].split(",")[2:]])
    csv.write_text("\n".join(lines) + "\n")
    assert_one_line_error(cv(copy), str(csv), "row 5", "patient F3", "'-1' in the trainset")


def test_duplicated_header_column(copy):
    csv = copy / "dlmi" / "trainset" / "trainset_true.csv"
    csv.write_text(csv.read_text().replace("ID,LABEL,GENDER,DOB,LYMPH_COUNT", "ID,LABEL,GENDER,DOB,LABEL", 1))
    assert_one_line_error(cv(copy), str(csv), "column LABEL appears more than once")


def test_csv_that_is_not_text(copy):
    csv = copy / "dlmi" / "testset" / "testset_data.csv"
    csv.write_bytes(b"ID,LABEL\n\xff\xfe\x00\x01 binary\n")
    assert_one_line_error(cv(copy), str(csv), "not a readable CSV")


def test_header_only_trainset_in_fit(copy, tmp_path_factory):
    bare = write_fake_embeddings(tmp_path_factory.mktemp("bare"), n_train=0)
    result = run_main(model_cli.main, ["fit", "--embeddings", str(bare), "--params", "default",
                                       "--model-dir", str(copy / "m")])
    assert_one_line_error(result, "no labelled patients", "nothing to train on")
    assert not (copy / "m").exists()


# --- parameters files --------------------------------------------------------------------------------------------------


def write_params(copy: Path, params: dict | None = None, spec: dict | None = None) -> Path:
    document = json.loads((copy / "params.json").read_text())
    document["params"].update(params or {})
    document["feature_spec"].update(spec or {})
    (copy / "params.json").write_text(json.dumps(document))
    return copy / "params.json"


@pytest.mark.parametrize("params, spec, fragment", [
    ({"learning_rate": -0.1}, {}, "learning_rate = -0.1 is out of range"),
    ({"learning_rate": "fast"}, {}, "learning_rate = 'fast' is not a number"),
    ({"num_iterations": 1e308}, {}, "num_iterations = 1e+308 is out of range"),
    ({"num_iterations": 2.5}, {}, "num_iterations = 2.5 is not an integer"),
    ({"n_models": 0}, {}, "n_models = 0 is out of range"),
    ({"num_leaves": True}, {}, "num_leaves = True is not an integer"),
    ({"lambda_l2": float("nan")}, {}, "lambda_l2 = nan is out of range"),
    ({"boosting": "dart"}, {}, "unknown parameter 'boosting'"),
    ({"objective": "regression"}, {}, "only 'binary'"),
    ({}, {"embedding_pca": 100000}, "embedding_pca must be an integer from 0 to 256"),
    ({}, {"clinical": "age"}, "clinical must be a list of names"),
    ({}, {"cell_score_alpha": -1}, "cell_score_alpha must be a number"),
    ({}, {"cell_score_stats": ["mean", "median"]}, "unknown bag statistic 'median'"),
    ({}, {"inner_folds": 1}, "inner_folds must be an integer from 2 to 50"),
    ({}, {"colour": 1}, "unknown key(s) colour"),
])
def test_invalid_parameters_file(copy, params, spec, fragment):
    path = write_params(copy, params, spec)
    assert_one_line_error(cv(copy), str(path), fragment)
    assert not (copy / "cv").exists()


def test_pca_larger_than_the_data(copy):
    write_params(copy, {}, {"embedding_pca": 40, "embedding_stats": ["mean"]})  # 16 dimensions
    assert_one_line_error(cv(copy), "embedding_pca 40 exceeds", "16 dimensions")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"params": {}}'])
def test_parameters_file_that_is_not_one(copy, content):
    (copy / "params.json").write_text(content)
    assert_one_line_error(cv(copy), str(copy / "params.json"))


# --- saved models ------------------------------------------------------------------------------------------------------


def edit_model(copy: Path, change) -> Path:
    path = copy / "model" / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


def booster_files(copy: Path) -> list[Path]:
    return sorted((copy / "model").glob("booster-*.txt"))


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(boosters=[]), "boosters must list at least one"),
    (lambda d: d.update(n_boosters=0, boosters=[]), "boosters must list at least one"),
    (lambda d: d["boosters"][0].update(file="../../etc/passwd"), "boosters must list"),
    (lambda d: d.update(columns="clinical:age"), "columns is missing or not a list"),
    (lambda d: d.pop("features"), "features is missing"),
    (lambda d: d["params"].update(learning_rate=-1), "learning_rate = -1 is out of range"),
    (lambda d: d["features"]["cell_score"]["fake-backbone"].update(beta=[1.0] * 8), "16-dimensional embeddings"),
    (lambda d: d["features"]["cell_score"]["fake-backbone"].update(beta=[float("nan")] * 16), "not finite"),
    (lambda d: d["features"]["cell_score"]["fake-backbone"].update(intercept="high"), "intercept must be a number"),
    (lambda d: d["columns"].append({"family": "weather"}), "damaged model description"),
    (lambda d: d.update(format="lymphocytosis-model/1"), "refit it"),
    (lambda d: d.update(embeddings_provenance={"fake-backbone": "x"}), "embeddings_provenance must map"),
])
def test_edited_model_json_is_refused(copy, change, fragment):
    path = edit_model(copy, change)
    line = assert_one_line_error(predict(copy), fragment)
    assert str(path) in line or str(copy / "embeddings.h5") in line  # the model file, or the embeddings it does not fit
    assert not (copy / "p.csv").exists()


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_damaged_booster_file_is_refused_before_lightgbm_reads_it(copy, damage):
    booster = booster_files(copy)[0]
    text = booster.read_text()
    if damage == "truncate":
        booster.write_text(text[: len(text) // 2])
    elif damage == "edit":
        booster.write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    else:
        booster.unlink()
    fragment = "missing" if damage == "delete" else "differs from the SHA-256 recorded"
    assert_one_line_error(predict(copy), str(booster), fragment)


def test_failed_refit_keeps_the_working_model(copy, monkeypatch):
    """A refit that dies while writing (here: model.json's write fails) leaves the old model usable, unchanged."""
    from lymphocytosis.model import persistence

    assert predict(copy).code == 0
    before = pd.read_csv(copy / "p.csv")
    files = {p.name: p.read_bytes() for p in (copy / "model").iterdir() if p.is_file()}

    def full_disk(path, document):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(persistence, "atomic_write_json", full_disk)
    params = write_params(copy, {"num_iterations": 12})
    result = run_main(model_cli.main, ["fit", "--embeddings", str(copy / "embeddings.h5"), "--params", str(params),
                                       "--root", str(copy / "dlmi"), "--model-dir", str(copy / "model")])
    assert_one_line_error(result, "No space left on device")
    monkeypatch.undo()
    assert predict(copy).code == 0
    pd.testing.assert_frame_equal(pd.read_csv(copy / "p.csv"), before)
    assert {p.name: p.read_bytes() for p in (copy / "model").iterdir() if p.name in files} == files
    assert predict(copy, "--all", "--clinical-only-fallback").code == 0  # its clinical-only model is still there


def test_model_that_cannot_separate_is_not_saved(copy):
    result = run_main(model_cli.main, ["fit", "--embeddings", str(copy / "embeddings.h5"), "--params", "default",
                                       "--root", str(copy / "dlmi"), "--model-dir", str(copy / "model")])
    # 24 training patients and min_data_in_leaf 8 can split: a fit with the defaults works here...
    assert result.code == 0, result.stderr
    params = write_params(copy, {"min_data_in_leaf": 20})  # ...but not with 20: every patient gets the prior
    before = (copy / "model" / "model.json").read_bytes()
    result = run_main(model_cli.main, ["fit", "--embeddings", str(copy / "embeddings.h5"), "--params", str(params),
                                       "--root", str(copy / "dlmi"), "--model-dir", str(copy / "model")])
    assert_one_line_error(result, "same probability", "24 training patients with min_data_in_leaf 20", "not saved")
    assert (copy / "model" / "model.json").read_bytes() == before


# --- outputs aimed at inputs --------------------------------------------------------------------------------------------


def test_predict_out_onto_the_embeddings_file(copy):
    h5 = copy / "embeddings.h5"
    before = h5.read_bytes()
    assert_one_line_error(predict(copy, "--out", str(h5)), "--out", "is an input of this run")
    assert h5.read_bytes() == before


def test_cv_json_onto_the_embeddings_file(copy):
    h5 = copy / "embeddings.h5"
    before = h5.read_bytes()
    assert_one_line_error(cv(copy, "--json", str(h5)), "--json", "is an input of this run")
    assert h5.read_bytes() == before


def test_cv_dir_onto_the_dataset(copy):
    root = copy / "dlmi"
    before = sorted(p.name for p in root.rglob("*"))
    assert_one_line_error(cv(copy, "--cv-dir", str(root)), "--cv-dir", str(root))
    assert sorted(p.name for p in root.rglob("*")) == before


def test_cv_dir_holding_other_files(copy):
    (copy / "mine").mkdir()
    (copy / "mine" / "notes.txt").write_text("keep me")
    assert_one_line_error(cv(copy, "--cv-dir", str(copy / "mine")), "holds other files")
    assert (copy / "mine" / "notes.txt").read_text() == "keep me"


def test_model_dir_holding_other_files(copy):
    (copy / "model" / "notes.txt").write_text("keep me")
    result = run_main(model_cli.main, ["fit", "--embeddings", str(copy / "embeddings.h5"), "--params",
                                       str(copy / "params.json"), "--root", str(copy / "dlmi"), "--model-dir",
                                       str(copy / "model")])
    assert_one_line_error(result, "--model-dir", "holds other files", "notes.txt")


def test_predict_out_and_submission_the_same(copy):
    assert_one_line_error(predict(copy, "--submission", str(copy / "p.csv")), "--out and --submission are the same file")


def test_tune_best_params_onto_a_csv(copy):
    csv = copy / "dlmi" / "trainset" / "trainset_true.csv"
    before = csv.read_text()
    result = run_main(tune_cli.main, ["--embeddings", str(copy / "embeddings.h5"), "--root", str(copy / "dlmi"),
                                      "--trials", "1", "--folds", "3",
                                      "--repeats", "1", "--storage", f"sqlite:///{copy}/t.db", "--best-params", str(csv)])
    assert_one_line_error(result, "--best-params", "is an input of this run")
    assert csv.read_text() == before


def test_unwritable_output_path(copy):
    """A write that fails (here: the parent of --out is a file) is one line naming the path, and leaves nothing."""
    blocker = copy / "blocker"
    blocker.write_text("a file, not a folder")
    result = predict(copy, "--out", str(blocker / "p.csv"), "--submission", str(copy / "s.csv"))
    assert_one_line_error(result, str(blocker / "p.csv"), "cannot write")
    assert blocker.read_text() == "a file, not a folder" and not (copy / "s.csv").exists()


# --- saved cross-validation results ---------------------------------------------------------------------------------------


def test_tampered_cv_results_are_refused_by_the_report(copy):
    assert cv(copy).code == 0
    (folder,) = [p for p in (copy / "cv").iterdir() if p.is_dir()]  # the run's folder: one per settings and folds
    predictions = folder / "predictions.csv"
    frame = pd.read_csv(predictions)
    frame.loc[0, "PROBABILITY"] = 2.0
    frame.to_csv(predictions, index=False)
    result = run_main(model_cli.main, ["report", "--embeddings", str(copy / "embeddings.h5"), "--root",
                                       str(copy / "dlmi"), "--params", str(copy / "params.json"), "--folds", "3",
                                       "--repeats", "1", "--cv-dir",
                                       str(copy / "cv"), "--out-dir", str(copy / "report"), "--patients", "none"])
    assert_one_line_error(result, str(folder), "invalid probability")
    assert not (copy / "report").exists()
