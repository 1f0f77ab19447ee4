"""`model.py` on the real (tiny) synthetic embeddings: cv --json contents and reproducibility, fit/predict with a
model saved as JSON + LightGBM text, loaded predictions equal to in-memory ones, provenance refusals.

CV is the slow part (1280-dimension cell scores): three `cv` runs in all (3 folds, 1-2 repeats).
With 12 patients LightGBM's default min_data_in_leaf (8) allows no split at all, so every prediction would be the
same constant and prove nothing: cv and fit use a parameters file (`params_file`) that lets the trees grow."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import model as model_cli
from conftest import SYNTHETIC_N_TEST, SYNTHETIC_N_TRAIN, assert_one_line_error, pin_torch_threads, run_main, small_settings
from lymphocytosis.errors import InputError
from lymphocytosis.model.classifier import FittedModel
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.persistence import MODEL_FORMAT, load_model
from lymphocytosis.model.tuned_params import Settings, load_settings, save_settings

CV_KEYS = {"n_patients", "n_tumoral", "folds", "repeats", "seed", "balanced_accuracy", "roc_auc", "clinical_only", "oof",
           "settings", "embeddings"}


SMALL_DATA_PARAMS = {"min_data_in_leaf": 2, "num_iterations": 60, "n_models": 2}


@pytest.fixture(scope="module")
def params_file(synthetic_embeddings, tmp_path_factory) -> Path:
    """Settings for `synthetic_embeddings` as tune.py saves them: default features, trees able to split."""
    defaults = Settings()
    path = tmp_path_factory.mktemp("params") / "small_data_params.json"
    save_settings(path, Settings(defaults.spec, {**defaults.params, **SMALL_DATA_PARAMS}), load_cohort(synthetic_embeddings),
                  {"trial": 0})
    return path


def run_cv(embeddings: Path, json_path: Path, params: Path, seed: int = 0, repeats: int = 2):
    result = run_main(model_cli.main, ["cv", "--embeddings", str(embeddings), "--params", str(params), "--folds", "3",
                                       "--repeats", str(repeats), "--seed", str(seed), "--json", str(json_path),
                                       "--cv-dir", str(json_path.with_suffix(""))])
    assert result.code == 0, result.stderr
    return result, json.loads(json_path.read_text())


@pytest.fixture(scope="module")
def cv_runs(synthetic_embeddings, params_file, tmp_path_factory):
    base = tmp_path_factory.mktemp("cv")
    first = run_cv(synthetic_embeddings, base / "a.json", params_file)
    second = run_cv(synthetic_embeddings, base / "b.json", params_file)
    return first, second


def test_cv_json_contents(cv_runs, synthetic_embeddings, params_file):
    (result, doc), _ = cv_runs
    assert set(doc) >= CV_KEYS
    assert doc["n_patients"] == SYNTHETIC_N_TRAIN and doc["folds"] == 3 and doc["repeats"] == 2 and doc["seed"] == 0
    for summary in (doc, doc["clinical_only"]):
        for metric in ("balanced_accuracy", "roc_auc"):
            assert set(summary[metric]) == {"mean", "std"}
            assert 0 <= summary[metric]["mean"] <= 1 and summary[metric]["std"] >= 0
    cohort = load_cohort(synthetic_embeddings)
    assert sorted(row["id"] for row in doc["oof"]) == sorted(cohort.labelled_ids)  # every labelled patient, once
    for row in doc["oof"]:
        assert set(row) == {"id", "label", "probability"}
        assert row["label"] == cohort.clinical.loc[row["id"], "label"]
        assert 0 <= row["probability"] <= 1
    assert doc["n_tumoral"] == sum(row["label"] for row in doc["oof"])
    assert doc["settings"]["source"] == str(params_file)
    assert doc["settings"]["params"]["min_data_in_leaf"] == SMALL_DATA_PARAMS["min_data_in_leaf"]
    assert len({row["probability"] for row in doc["oof"]}) > 1
    assert doc["embeddings"][0]["path"] == str(synthetic_embeddings)
    assert "images + clinical" in result.stdout and "clinical only" in result.stdout


def test_cv_deterministic_in_seed(cv_runs, synthetic_embeddings, params_file, tmp_path):
    (first_result, first), (second_result, second) = cv_runs
    assert first == second
    assert first_result.stdout == second_result.stdout
    _, other = run_cv(synthetic_embeddings, tmp_path / "c.json", params_file, seed=1, repeats=1)
    assert other["seed"] == 1
    assert [r["probability"] for r in other["oof"]] != [r["probability"] for r in first["oof"]]


def test_cv_too_few_patients_for_folds(synthetic_embeddings):
    # 12 patients, 4 reactive: 5 folds cannot be stratified
    result = run_main(model_cli.main, ["cv", "--embeddings", str(synthetic_embeddings), "--folds", "5", "--repeats", "1",
                                       "--params", "default"])
    assert_one_line_error(result, "5-fold")


# --- fit / predict -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(synthetic_embeddings, params_file, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("fit") / "model"
    result = run_main(model_cli.main, ["fit", "--embeddings", str(synthetic_embeddings), "--params", str(params_file),
                                       "--model-dir", str(model_dir)])
    assert result.code == 0, result.stderr
    return model_dir


@pytest.fixture(scope="module")
def predicted(fitted, synthetic_embeddings):
    out, submission = fitted.parent / "predictions.csv", fitted.parent / "submission.csv"
    result = run_main(model_cli.main, ["predict", "--embeddings", str(synthetic_embeddings), "--model-dir", str(fitted),
                                       "--out", str(out), "--submission", str(submission)])
    assert result.code == 0, result.stderr
    return out, submission


def test_fit_writes_json_and_text_only(fitted, params_file):
    names = sorted(p.name for p in fitted.iterdir() if p.name not in (".lock", "MODEL_CARD.md"))  # .lock: saves take turns
    assert (fitted / "MODEL_CARD.md").is_file()
    clinical = [name for name in names if name.startswith("clinical-only-")]  # the fallback model, itself a model
    document = json.loads((fitted / "model.json").read_text())
    assert clinical == ([document["training"]["clinical_only"]] if document["training"]["clinical_only"] else [])
    names = [name for name in names if name not in clinical]
    assert len(names) == SMALL_DATA_PARAMS["n_models"] + 1 and names[-1] == "model.json"
    assert all(name.startswith("booster-") and name.endswith(".txt") for name in names[:-1])
    document = json.loads((fitted / "model.json").read_text())
    assert document["format"] == MODEL_FORMAT
    assert [b["file"] for b in document["boosters"]] and sorted(b["file"] for b in document["boosters"]) == names[:-1]
    assert document["training"]["n_patients"] == SYNTHETIC_N_TRAIN
    assert document["training"]["settings_source"] == str(params_file)
    assert document["params"]["min_data_in_leaf"] == SMALL_DATA_PARAMS["min_data_in_leaf"]
    assert document["columns"][0]["family"] == "clinical"
    assert set(document["features"]["cell_score"]) == {"tf_efficientnet_lite0"}
    assert (fitted / names[0]).read_text().startswith("tree")
    for path in fitted.parent.rglob("*"):
        assert path.suffix not in {".pkl", ".pickle", ".joblib", ".npy", ".pt"}, path


def test_predict_outputs(predicted, synthetic_embeddings):
    out, submission = predicted
    cohort = load_cohort(synthetic_embeddings)
    predictions = pd.read_csv(out, dtype={"ID": str})
    columns = list(predictions.columns)
    assert columns[:3] == ["ID", "LABEL", "PROBABILITY"]
    assert columns[-4:] == ["OPERATING_POINT", "EVIDENCE", "DISTRIBUTION", "DRIFT_REASON"]
    assert set(columns[3:-4]) <= {"RECALIBRATED_PROBABILITY"} and (predictions["OPERATING_POINT"] == "balanced").all()
    assert set(predictions["DISTRIBUTION"]) <= {"in", "out"}
    assert list(predictions["ID"]) == cohort.unlabelled_ids and len(predictions) == SYNTHETIC_N_TEST
    assert set(predictions["EVIDENCE"]) == {"images+clinical"}  # every synthetic patient has cells
    assert set(predictions["LABEL"]) <= {0, 1}
    assert predictions["PROBABILITY"].between(0, 1).all()
    assert (predictions["LABEL"] == (predictions["PROBABILITY"] >= 0.5).astype(int)).all()
    assert predictions["PROBABILITY"].nunique() > 1  # a model that learned something, not a constant
    challenge = pd.read_csv(submission, dtype={"Id": str})
    assert list(challenge.columns) == ["Id", "Predicted"]
    assert list(challenge["Id"]) == list(predictions["ID"])
    assert list(challenge["Predicted"]) == list(predictions["LABEL"])


def test_loaded_model_predicts_like_in_memory(fitted, predicted, synthetic_embeddings, params_file):
    cohort = load_cohort(synthetic_embeddings)
    settings = load_settings(str(params_file), cohort)
    in_memory = FittedModel.fit(cohort, cohort.labelled_ids, settings.spec, settings.params)
    expected = in_memory.predict_proba(cohort, cohort.unlabelled_ids).probabilities

    saved = load_model(fitted)
    assert saved.spec == settings.spec and saved.params == settings.params
    assert saved.columns == in_memory.columns
    for name, weights in in_memory.features.cell_score.items():
        np.testing.assert_array_equal(saved.features.cell_score[name].beta, weights.beta)
    loaded = saved.predict_proba(cohort, cohort.unlabelled_ids).probabilities
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-12)
    in_memory = expected
    written = pd.read_csv(predicted[0])["PROBABILITY"].to_numpy()
    np.testing.assert_allclose(written, in_memory, rtol=0, atol=1e-6)


def test_predict_all_and_missing_model(fitted, synthetic_embeddings, tmp_path):
    out = tmp_path / "all.csv"
    result = run_main(model_cli.main, ["predict", "--embeddings", str(synthetic_embeddings), "--model-dir", str(fitted),
                                       "--all", "--out", str(out), "--submission", str(tmp_path / "s.csv")])
    assert result.code == 0, result.stderr
    assert len(pd.read_csv(out)) == SYNTHETIC_N_TRAIN + SYNTHETIC_N_TEST
    result = run_main(model_cli.main, ["predict", "--embeddings", str(synthetic_embeddings), "--model-dir",
                                       str(tmp_path / "nothing"), "--out", str(out)])
    assert_one_line_error(result, str(tmp_path / "nothing"), "fit")


# --- provenance -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_crop_embeddings(synthetic_root, tmp_path_factory) -> Path:
    """The same synthetic dataset extracted with --crop 48 instead of 64."""
    from lymphocytosis.extract.extraction import extract

    pin_torch_threads()
    out = tmp_path_factory.mktemp("crop48") / "other.h5"
    extract(synthetic_root, out, small_settings(crop=48))
    return out


def test_predict_refuses_other_provenance(fitted, other_crop_embeddings, tmp_path):
    result = run_main(model_cli.main, ["predict", "--embeddings", str(other_crop_embeddings), "--model-dir", str(fitted),
                                       "--out", str(tmp_path / "p.csv"), "--submission", str(tmp_path / "s.csv")])
    line = assert_one_line_error(result, str(other_crop_embeddings), "preprocessing", "crop")
    assert '"crop": 64' in line and '"crop": 48' in line  # both settings named
    assert not (tmp_path / "p.csv").exists()


def beside(embeddings: Path, folder: Path) -> Path:
    """A copy of the embeddings in `folder`, where `--params auto` looks for tune.py's best_params.json."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(embeddings, folder / "embeddings.h5")
    return folder / "embeddings.h5"


def test_params_of_other_provenance(synthetic_embeddings, other_crop_embeddings, tmp_path, caplog):
    params = Settings().params
    synthetic_embeddings = beside(synthetic_embeddings, tmp_path / "artifacts")
    tuned = tmp_path / "artifacts" / "best_params.json"
    save_settings(tuned, Settings(params=dict(params, num_iterations=20)), load_cohort(other_crop_embeddings), {"trial": 0})
    # an explicit path: refused
    result = run_main(model_cli.main, ["fit", "--embeddings", str(synthetic_embeddings), "--params", str(tuned),
                                       "--model-dir", str(tmp_path / "m1")])
    line = assert_one_line_error(result, str(tuned), "another provenance", "crop")
    assert '"crop": 48' in line and '"crop": 64' in line
    assert not (tmp_path / "m1").exists()
    # 'auto' finds it where tune.py saves it (beside the embeddings): ignored, with a warning, the defaults used
    with caplog.at_level(logging.WARNING):
        result = run_main(model_cli.main, ["fit", "--embeddings", str(synthetic_embeddings), "--params", "auto",
                                           "--model-dir", str(tmp_path / "m2")])
    assert any(str(tuned) in r.getMessage() and "another provenance" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records), caplog.text
    # the defaults were used: with 12 patients their trees cannot split, and such a model is refused, not saved
    assert_one_line_error(result, "same probability", "min_data_in_leaf 8", "not saved")
    assert not (tmp_path / "m2" / "model.json").exists()


def test_params_auto_uses_matching_file(synthetic_embeddings, tmp_path):
    params = Settings().params
    synthetic_embeddings = beside(synthetic_embeddings, tmp_path / "artifacts")
    tuned = tmp_path / "artifacts" / "best_params.json"
    save_settings(tuned, Settings(params={**params, **SMALL_DATA_PARAMS, "num_iterations": 20}),
                  load_cohort(synthetic_embeddings), {"trial": 0})
    result = run_main(model_cli.main, ["fit", "--embeddings", str(synthetic_embeddings), "--params", "auto",
                                       "--model-dir", str(tmp_path / "m")])
    assert result.code == 0, result.stderr
    document = json.loads((tmp_path / "m" / "model.json").read_text())
    assert document["training"]["settings_source"] == str(tuned)
    assert document["params"]["num_iterations"] == 20
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run_main(model_cli.main, ["fit", "--embeddings", str(synthetic_embeddings), "--params",
                                                    str(bad), "--model-dir", str(tmp_path / "m3")]), str(bad))


def test_params_of_other_patients_are_refused(synthetic_embeddings, tmp_path):
    """Same embeddings provenance, other labelled patients: tuned settings do not carry over silently."""
    cohort = load_cohort(synthetic_embeddings)
    tuned = tmp_path / "best_params.json"
    save_settings(tuned, Settings(params=dict(Settings().params, num_iterations=20)), cohort, {"trial": 0})
    document = json.loads(tuned.read_text())
    document["dataset_fingerprint"] = "0" * 12
    tuned.write_text(json.dumps(document))
    with pytest.raises(InputError, match="other labelled patients"):
        load_settings(str(tuned), cohort)
    assert load_settings("auto", cohort, best_params=tuned).source == "defaults"


def test_a_refused_command_leaves_no_run_log(tmp_path):
    """Every check (settings, output folders, saved model, patients, --stain-cv) runs before the run is recorded:
    a refusal leaves nothing in <artifacts>/logs, and one accepted command does leave its log there."""
    from conftest import write_fake_embeddings

    embeddings = write_fake_embeddings(tmp_path / "a", n_train=12, n_test=2)
    logs = embeddings.parent / "logs"
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    bad_params = tmp_path / "bad.json"
    bad_params.write_text("{}")
    base = ["--embeddings", str(embeddings)]
    refused = [
        (["cv", *base, "--cv-dir", str(crowded)], "--cv-dir"),
        (["fit", *base, "--model-dir", str(crowded)], "--model-dir"),
        (["fit", *base, "--params", str(bad_params), "--model-dir", str(tmp_path / "m")], "bad.json"),
        (["predict", *base, "--model-dir", str(tmp_path / "no-model"), "--out", str(tmp_path / "p.csv"),
          "--submission", str(tmp_path / "s.csv")], "no-model"),
        (["report", *base, "--patients", "NOBODY", "--out-dir", str(tmp_path / "r"), "--cv-dir", str(tmp_path / "c")],
         "NOBODY"),
        (["report", *base, "--stain-cv", str(tmp_path / "no-cv"), "--out-dir", str(tmp_path / "r"),
          "--cv-dir", str(tmp_path / "c")], "no-cv"),
        (["report", *base, "--out-dir", str(crowded), "--cv-dir", str(tmp_path / "c")], "--out-dir"),
    ]
    for argv, fragment in refused:
        assert_one_line_error(run_main(model_cli.main, argv), fragment)
        assert not logs.exists(), f"{argv[0]} left a run log although it was refused"
    fitted = run_main(model_cli.main, ["fit", *base, "--params", "default", "--model-dir", str(tmp_path / "m")])
    assert logs.exists() and any(logs.glob("fit-*.log")), fitted.stderr
