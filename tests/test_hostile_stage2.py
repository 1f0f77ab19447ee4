"""More hostile inputs to stage 2: values read from files people edit or that got cut short (parameters,
model.json, saved CV results, embeddings and measurement files), and outputs aimed at inputs or at each other.
Each bad input must give one `error:` line naming the file and the key, patient or option, exit code 2.

The cases of test_hostile_inputs.py continue here (that module is near its size limit); its helpers are reused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_hostile_inputs import cv, edit_model, predict, set_attr, write_params

import model as model_cli
import tune as tune_cli
from conftest import assert_one_line_error, fitted_small_model, flatten_cv, run_main, write_fake_embeddings
from lymphocytosis.errors import InputError
from lymphocytosis.model.params import validate_params

HUGE = "1" + "0" * 400  # an integer no float holds


@pytest.fixture(scope="module")
def stage2(tmp_path_factory) -> Path:
    """Fake embeddings (24 + 4 patients, 16 dimensions), a parameters file that lets trees split, a fitted model,
    and saved CV results."""
    base = fitted_small_model(tmp_path_factory.mktemp("hostile2"))
    assert cv(base).code == 0
    flatten_cv(base / "cv")  # the results at cv/cv.json, where these tests damage them
    return base


@pytest.fixture
def work(stage2, tmp_path) -> Path:
    """A private copy of everything in `stage2`, free to damage."""
    for name in ("dlmi", "model", "cv"):
        shutil.copytree(stage2 / name, tmp_path / name)
    for name in ("embeddings.h5", "params.json"):
        shutil.copyfile(stage2 / name, tmp_path / name)
    return tmp_path


def edit_json_text(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


# --- 1. parameters: huge, boolean, NaN and infinite values ---------------------------------------------------------


@pytest.mark.parametrize("name, value, fragment", [
    ("num_leaves", 10**30, "num_leaves = 1e+30 is out of range"),
    ("num_leaves", 10**400, "is out of range"),
    ("num_leaves", -10**400, "is out of range"),
    ("num_leaves", float("inf"), "num_leaves = inf is out of range"),
    ("num_iterations", float("nan"), "num_iterations = nan is out of range"),
    ("learning_rate", float("-inf"), "learning_rate = -inf is out of range"),
    ("learning_rate", 10**400, "is out of range"),
    ("learning_rate", True, "learning_rate = True is not a number"),
    ("n_models", False, "n_models = False is not an integer"),
    ("max_depth", 0, "max_depth = 0 is out of range"),
])
def test_parameter_values_out_of_range(name, value, fragment):
    with pytest.raises(InputError) as caught:
        validate_params({name: value}, "params.json")
    message = str(caught.value)
    assert message.startswith("params.json: parameter") and fragment in message and "\n" not in message
    assert len(message) < 300  # a 400-digit number is not printed whole


TOO_LONG = "1" + "0" * 5000  # more digits than Python reads from text: the JSON reader itself refuses it


@pytest.mark.parametrize("literal, fragment", [
    (HUGE, "num_leaves = 1e+400 is out of range"), ("1e400", "num_leaves = inf is out of range"),
    ("-1e400", "num_leaves = -inf is out of range"), (TOO_LONG, "4300 digits"),
])
def test_huge_parameter_in_a_parameters_file(work, literal, fragment):
    before = (work / "cv" / "cv.json").read_bytes()
    path = edit_json_text(work / "params.json", '"num_leaves": 4', f'"num_leaves": {literal}')
    assert_one_line_error(cv(work), str(path), fragment)
    assert (work / "cv" / "cv.json").read_bytes() == before


@pytest.mark.parametrize("literal, fragment", [
    (HUGE, "num_leaves = 1e+400 is out of range"), ("1e400", "num_leaves = inf is out of range"),
    (TOO_LONG, "4300 digits"),
])
def test_huge_parameter_in_model_json(work, literal, fragment):
    path = edit_json_text(work / "model" / "model.json", '"num_leaves": 4', f'"num_leaves": {literal}')
    assert_one_line_error(predict(work), str(path), fragment)
    assert not (work / "p.csv").exists()


# --- 2. model.json: every array of the right shape, every number a finite number ----------------------------------


def weights(document: dict) -> dict:
    return document["features"]["cell_score"]["fake-backbone"]


@pytest.mark.parametrize("change, fragment", [
    (lambda d: weights(d).update(beta=3.0), "beta"),
    (lambda d: weights(d).update(beta=[[1.0] * 16]), "beta"),
    (lambda d: weights(d).update(beta=[[1.0]] * 16), "beta"),
    (lambda d: weights(d).update(beta=[True] * 16), "beta"),
    (lambda d: weights(d).update(beta=None), "beta"),
    (lambda d: weights(d).update(intercept=True), "intercept"),
    (lambda d: weights(d).update(intercept="0.5"), "intercept"),
    (lambda d: weights(d).update(intercept="nan"), "intercept"),
    (lambda d: d["features"].update(backbones="fake-backbone"), "backbones"),
    (lambda d: d["features"]["cell_score"].update({"other": weights(d)}), "other"),
])
def test_misshapen_cell_score_weights_in_model_json(work, change, fragment):
    path = edit_model(work, change)
    assert_one_line_error(predict(work), str(path), fragment)
    assert not (work / "p.csv").exists()


def test_model_json_backbones_must_match_its_provenance(work):
    path = edit_model(work, lambda d: d["features"].update(backbones=["fake-backbone", "extra"]))
    assert_one_line_error(predict(work), str(path), "features.backbones")


def test_model_with_measurements_and_the_defaults_is_saved_and_read_back(stage2, tmp_path):
    """With the default cell score on, a measurement file (no score of its own) needs no cell-score weights: the
    model fit saves must be one that predict reads."""
    from test_measurements import fake_measurements

    measurements = fake_measurements(stage2 / "embeddings.h5", tmp_path / "measured.h5")
    data = ["--embeddings", str(stage2 / "embeddings.h5"), "--measurements", str(measurements), "--root",
            str(stage2 / "dlmi")]
    fitted = run_main(model_cli.main, ["fit", *data, "--params", "default", "--model-dir", str(tmp_path / "model")])
    assert fitted.code == 0, fitted.stderr
    predicted = run_main(model_cli.main, ["predict", *data, "--model-dir", str(tmp_path / "model"),
                                          "--out", str(tmp_path / "p.csv"), "--submission", str(tmp_path / "s.csv")])
    assert predicted.code == 0, predicted.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == 4


@pytest.fixture
def pca_model(work) -> Path:
    """A model with PCA statistics of the embeddings (mean and components saved in model.json)."""
    params = write_params(work, {}, {"embedding_pca": 3, "embedding_stats": ["mean"]})
    result = run_main(model_cli.main, ["fit", "--embeddings", str(work / "embeddings.h5"), "--params", str(params),
                                       "--root", str(work / "dlmi"), "--model-dir", str(work / "model")])
    assert result.code == 0, result.stderr
    assert json.loads((work / "model" / "model.json").read_text())["features"]["pca"]
    return work


def pca(document: dict) -> dict:
    return document["features"]["pca"]["fake-backbone"]


@pytest.mark.parametrize("change, fragment", [
    (lambda d: pca(d).update(mean=0.5), "mean"),
    (lambda d: pca(d).update(mean=[pca(d)["mean"]]), "mean"),
    (lambda d: pca(d).update(components=pca(d)["components"][0]), "components"),
    (lambda d: pca(d).update(components=[[c] for c in pca(d)["components"]]), "components"),
    (lambda d: pca(d).update(components=[]), "components"),
    (lambda d: pca(d)["components"][1].__setitem__(2, 1e400), "components"),
])
def test_misshapen_pca_basis_in_model_json(pca_model, change, fragment):
    path = edit_model(pca_model, change)
    assert_one_line_error(predict(pca_model), str(path), fragment)


# --- 3. embeddings file: an empty bag of another dimension ---------------------------------------------------------


def replace_embeddings(path: Path, patient: str, values: np.ndarray) -> None:
    with h5py.File(path, "r+") as handle:
        del handle[f"patients/{patient}/embeddings"]
        handle[f"patients/{patient}"].create_dataset("embeddings", data=values)


def test_empty_bag_of_another_dimension_is_refused(tmp_path):
    h5 = write_fake_embeddings(tmp_path, empty=("F0",))
    replace_embeddings(h5, "F0", np.zeros((0, 7), np.float32))
    result = run_main(model_cli.main, ["cv", "--embeddings", str(h5), "--params", "default", "--folds", "3",
                                       "--repeats", "1", "--cv-dir", str(tmp_path / "cv")])
    assert_one_line_error(result, str(h5), "patient F0", "(0, 7), 7 dimensions where the file records 16")
    assert not (tmp_path / "cv").exists()


def test_previous_extraction_with_an_odd_empty_bag_is_damaged(tmp_path):
    """Its bags would be copied into the updated file: an odd one is found before, and --overwrite replaces it."""
    from lymphocytosis.extract.update import read_previous

    h5 = write_fake_embeddings(tmp_path, empty=("T1",))
    replace_embeddings(h5, "T1", np.zeros((0, 3), np.float32))
    with pytest.raises(InputError, match="patient T1.*--overwrite"):
        read_previous(h5)


def test_bags_are_checked_against_the_recorded_dimension(tmp_path):
    from lymphocytosis.contract.store import load_bags, read_provenance

    h5 = write_fake_embeddings(tmp_path)
    assert read_provenance(h5)["dim"] == 16
    set_attr(h5, "/", "dim", 8)
    with pytest.raises(InputError, match="16 dimensions where the file records 8"):
        load_bags(h5)
    set_attr(h5, "/", "dim", "sixteen")
    with pytest.raises(InputError, match="dim"):
        load_bags(h5)


# --- 4. one place for the embeddings formats ----------------------------------------------------------------------


def test_known_embeddings_formats_are_defined_once():
    from lymphocytosis.contract import store
    from lymphocytosis.extract import update

    assert store.FORMAT in store.KNOWN_FORMATS and "lymphocytosis-embeddings/1" in store.KNOWN_FORMATS
    assert not hasattr(update, "OLD_FORMATS")


# --- 5. feature-set names of files with the same name ----------------------------------------------------------------


def test_files_with_the_same_name_in_two_folders_get_distinct_names(stage2, tmp_path):
    from lymphocytosis.model.cohort import load_cohort

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copyfile(stage2 / "embeddings.h5", tmp_path / folder / "embeddings.h5")
    cohort = load_cohort([tmp_path / "a" / "embeddings.h5", tmp_path / "b" / "embeddings.h5"], stage2 / "dlmi")
    assert [s.name for s in cohort.sets] == ["fake-backbone@a", "fake-backbone@b"]
    for folder in ("c/x", "d/x"):
        (tmp_path / folder).mkdir(parents=True)
        shutil.copyfile(stage2 / "embeddings.h5", tmp_path / folder / "embeddings.h5")
    paths = [tmp_path / "c/x/embeddings.h5", tmp_path / "d/x/embeddings.h5", tmp_path / "a/embeddings.h5"]
    names = [s.name for s in load_cohort(paths, stage2 / "dlmi").sets]
    assert len(set(names)) == 3 and all(n.startswith("fake-backbone@") for n in names), names


def test_the_same_file_given_twice_is_refused(work):
    h5 = work / "embeddings.h5"
    (work / "link.h5").symlink_to(h5)
    result = run_main(model_cli.main, ["cv", "--embeddings", str(h5), "--embeddings", str(work / "link.h5"),
                                       "--root", str(work / "dlmi"), "--cv-dir", str(work / "cv2")])
    assert_one_line_error(result, str(work / "link.h5"), "given twice", str(h5))


# --- 6. outputs inside other outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["cv/headline.json", "cv"])
def test_cv_json_inside_the_cv_dir_is_refused(work, where):
    before = sorted(p.name for p in (work / "cv").rglob("*"))
    assert_one_line_error(cv(work, "--json", str(work / where)), "--json", "--cv-dir")
    assert sorted(p.name for p in (work / "cv").rglob("*")) == before


def test_report_stain_cv_is_an_input(work):
    result = run_main(model_cli.main, ["report", "--embeddings", str(work / "embeddings.h5"), "--root",
                                       str(work / "dlmi"), "--params", str(work / "params.json"), "--folds", "3",
                                       "--repeats", "1", "--cv-dir", str(work / "cv"), "--stain-cv", str(work / "cv"),
                                       "--out-dir", str(work / "report"), "--patients", "none"])
    assert_one_line_error(result, "--cv-dir", "input")


def test_report_out_dir_inside_the_cv_dir_is_refused(work):
    result = run_main(model_cli.main, ["report", "--embeddings", str(work / "embeddings.h5"), "--root",
                                       str(work / "dlmi"), "--params", str(work / "params.json"), "--folds", "3",
                                       "--repeats", "1", "--cv-dir", str(work / "cv"),
                                       "--out-dir", str(work / "cv" / "report"), "--patients", "none"])
    assert_one_line_error(result, "--out-dir", "--cv-dir")
    assert not (work / "cv" / "report").exists()


# --- 7. saved CV results, parameters files and measurement files -------------------------------------------------


def load(work: Path):
    from lymphocytosis.model.results import load_cv

    return load_cv(work / "cv")


def edit_cv_json(work: Path, **changes) -> None:
    path = work / "cv" / "cv.json"
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("changes, fragment", [
    ({"folds": 1e400}, "folds"),
    ({"folds": True}, "folds"),
    ({"repeats": "1"}, "repeats"),
    ({"seed": 0.5}, "seed"),
    ({"folds": 1}, "folds"),
])
def test_cv_json_design_must_be_integers_in_range(work, changes, fragment):
    edit_cv_json(work, **changes)
    with pytest.raises(InputError, match=fragment):
        load(work)


def test_cv_json_that_is_no_object(work):
    (work / "cv" / "cv.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="cv.json"):
        load(work)


def test_cv_json_nested_too_deep_is_one_error(work):
    (work / "cv" / "cv.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="cv.json"):
        load(work)
    assert_one_line_error(run_main(model_cli.main, ["cv", "--embeddings", str(work / "embeddings.h5"),
                                                    "--cv-dir", str(work / "cv")]), "--cv-dir")


@pytest.mark.parametrize("info, fragment", [({"seconds": None}, "info.seconds"), ({"seconds": -1}, "info.seconds"),
                                            ({"created": 5}, "info.created")])
def test_cv_json_info_values_are_checked(work, info, fragment):
    path = work / "cv" / "cv.json"
    document = json.loads(path.read_text())
    document["info"].update(info)
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=fragment):
        load(work)


@pytest.mark.parametrize("name, damage, fragment", [
    ("predictions.csv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "holds no patient"),
    ("predictions.csv", lambda p: p.write_text(p.read_text().replace("LABEL", "LABLE", 1)), "predictions.csv"),
    ("explanations.h5", lambda p: p.write_bytes(p.read_bytes()[:2000]), "explanations.h5"),
])
def test_damaged_saved_files_are_named(work, name, damage, fragment):
    damage(work / "cv" / name)
    with pytest.raises(InputError, match=fragment):
        load(work)


def test_edited_label_in_saved_predictions_is_refused(work):
    path = work / "cv" / "predictions.csv"
    frame = pd.read_csv(path, dtype={"ID": str}, keep_default_na=False)
    frame.loc[frame["ID"] == "F0", "LABEL"] = 1 - frame.loc[frame["ID"] == "F0", "LABEL"]
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match="predictions.csv"):
        load(work)


def test_fractional_label_in_saved_predictions_is_refused(work):
    path = work / "cv" / "predictions.csv"
    frame = pd.read_csv(path, dtype={"ID": str}, keep_default_na=False)
    frame["LABEL"] = frame["LABEL"].astype(float)
    frame.loc[0, "LABEL"] = frame.loc[0, "LABEL"] + 0.5
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match="label"):
        load(work)


def rewrite_dataset(path: Path, name: str, change) -> None:
    with h5py.File(path, "r+") as handle:
        values = change(handle[name][()])
        del handle[name]
        handle.create_dataset(name, data=values)


@pytest.mark.parametrize("name, change, fragment", [
    ("gain_share", lambda v: np.full_like(v, np.nan), "gain"),
    ("shap", lambda v: np.where(np.arange(v.size).reshape(v.shape) == 0, np.inf, v), "SHAP"),
    ("values", lambda v: np.full(v.shape, b"x"), "values"),
    ("cell_scores/0/F0", lambda v: np.stack([v, v]), "F0"),
    ("cell_scores/0/F0", lambda v: np.full_like(v, np.inf), "F0"),
])
def test_damaged_explanations_are_refused(work, name, change, fragment):
    rewrite_dataset(work / "cv" / "explanations.h5", name, change)
    with pytest.raises(InputError, match=fragment):
        load(work)


def test_explanations_of_an_unknown_patient_are_refused(work):
    with h5py.File(work / "cv" / "explanations.h5", "r+") as handle:
        handle["cell_scores/0"].create_dataset("Z9", data=np.zeros(3))
    with pytest.raises(InputError, match="Z9"):
        load(work)


@pytest.mark.parametrize("provenance", [["fake-backbone"], {"fake-backbone": "x"}, "x"])
def test_parameters_file_with_malformed_provenance(work, provenance):
    path = work / "params.json"
    document = json.loads(path.read_text())
    document["embeddings_provenance"] = provenance
    path.write_text(json.dumps(document))
    assert_one_line_error(cv(work), str(path), "embeddings_provenance")


def test_parameters_file_with_a_huge_number_elsewhere(work):
    path = work / "params.json"
    path.write_text(path.read_text().replace('"trial": 0', '"trial": 1' + "0" * 5000))
    assert_one_line_error(cv(work), str(path))


@pytest.mark.parametrize("names, fragment", [
    ([1, 2, 3, 4], "dimension_names"),
    (["a", "a", "b", "c"], "dimension_names"),
    ({"a": 1, "b": 2, "c": 3, "d": 4}, "dimension_names"),
])
def test_measurement_file_with_malformed_dimension_names(stage2, tmp_path, names, fragment):
    from test_measurements import fake_measurements

    measurements = fake_measurements(stage2 / "embeddings.h5", tmp_path / "measured.h5")
    set_attr(measurements, "/", "dimension_names", json.dumps(names))
    result = run_main(model_cli.main, ["cv", "--embeddings", str(stage2 / "embeddings.h5"), "--measurements",
                                       str(measurements), "--root", str(stage2 / "dlmi"), "--params", "default",
                                       "--folds", "3", "--repeats", "1", "--cv-dir", str(tmp_path / "cv")])
    assert_one_line_error(result, str(measurements), fragment)


def test_saves_into_one_model_dir_take_turns(work, tmp_path):
    """Two refits into the same --model-dir at once (here: saving two different models over and over)
    always leave a complete model: model.json never names a booster the other process removed."""
    import threading

    from lymphocytosis.model.persistence import load_model, save_model

    params = write_params(work, {"num_iterations": 12})  # another ensemble: other booster files
    assert run_main(model_cli.main, ["fit", "--embeddings", str(work / "embeddings.h5"), "--params", str(params),
                                     "--model-dir", str(tmp_path / "other")]).code == 0
    model, other = load_model(work / "model"), load_model(tmp_path / "other")
    target = tmp_path / "shared-model"

    def keep_saving(which, rounds=25):
        for _ in range(rounds):
            save_model(which, target)

    failures = []

    def guarded(which):
        try:
            keep_saving(which)
        except Exception as exc:  # reported below: a thread's exception would otherwise be lost
            failures.append(exc)

    # Threads, each with its own lock file handle, contend exactly like processes (flock locks belong to the open
    # file, not to the process); forking a process that has run LightGBM's OpenMP code can hang.
    workers = [threading.Thread(target=guarded, args=(m,)) for m in (model, other)]
    for worker in workers:
        worker.start()
    reads = 0
    while any(w.is_alive() for w in workers):
        if (target / "model.json").exists():
            load_model(target)  # a load during the saves sees one complete model
            reads += 1
    for worker in workers:
        worker.join()
    assert not failures, failures
    loaded = load_model(target)
    assert loaded.params in (model.params, other.params) and reads > 0
    named = {b["file"] for b in json.loads((target / "model.json").read_text())["boosters"]}
    assert {p.name for p in target.glob("booster-*.txt")} == named  # no orphan left behind


def test_journal_storage_must_be_a_journal(work, tmp_path):
    """A --storage file that is not an Optuna journal is refused untouched: Optuna would append to it first."""
    notes = tmp_path / "notes.log"
    notes.write_text("my notes\n")
    result = run_main(tune_cli.main, ["--embeddings", str(work / "embeddings.h5"), "--trials", "1",
                                      "--storage", str(notes), "--best-params", str(tmp_path / "best.json")])
    assert_one_line_error(result, str(notes), "not an Optuna journal file")
    assert notes.read_text() == "my notes\n"
