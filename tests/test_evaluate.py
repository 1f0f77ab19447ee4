"""`model.py evaluate`: a saved model judged on another labelled cohort; the same BA and AUC as computed by hand
from `predict --all`; training patients refused by name (same ID, or same cells under another name).

Runs on hand-made embeddings (`write_fake_embeddings`, no torch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

import model as model_cli
from conftest import assert_one_line_error, fitted_small_model, run_main, write_fake_embeddings
from lymphocytosis.cli import main as lymphocytosis_main
from lymphocytosis.model.cohort import load_cohort


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return fitted_small_model(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def new_cohort(tmp_path_factory) -> Path:
    """Patients G0.. with other cells (another seed): a cohort the model never saw."""
    return write_fake_embeddings(tmp_path_factory.mktemp("site2"), n_train=30, seed=7, train_prefix="G")


def evaluate(model_dir: Path, embeddings: Path, out_dir: Path, *extra: str):
    return run_main(model_cli.main, ["evaluate", "--model-dir", str(model_dir), "--embeddings", str(embeddings),
                                     "--out-dir", str(out_dir), *extra])


def test_evaluate_matches_predict_all(trained, new_cohort, tmp_path):
    result = evaluate(trained / "model", new_cohort, tmp_path / "eval", "--prevalence", "0.2")
    assert result.code == 0, result.stderr
    out = tmp_path / "eval"
    results = json.loads((out / "results.json").read_text())
    predicted = run_main(model_cli.main, ["predict", "--embeddings", str(new_cohort), "--model-dir", str(trained / "model"),
                                          "--all", "--out", str(tmp_path / "p.csv"), "--submission", str(tmp_path / "s.csv")])
    assert predicted.code == 0, predicted.stderr
    frame = pd.read_csv(tmp_path / "p.csv", dtype={"ID": str})
    cohort = load_cohort(new_cohort)
    frame = frame[frame["ID"].isin(cohort.labelled_ids)]
    labels = cohort.labels(frame["ID"].tolist())
    assert len(frame) == results["cohort"]["n_patients"] == 30
    assert results["headline"]["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(labels, (frame["PROBABILITY"] >= 0.5).astype(int)), abs=1e-12)
    assert results["headline"]["roc_auc"]["value"] == pytest.approx(roc_auc_score(labels, frame["PROBABILITY"]), abs=1e-9)
    for name in ("index.html", "summary.md", "patients.csv", "operating_points.csv", "decision_curve.csv",
                 "reliability.csv", "figures/decision_curve.png", "figures/reliability.png"):
        assert (out / name).is_file(), name
    points = pd.read_csv(out / "operating_points.csv")
    assert points["operating_point"].tolist() == ["balanced", "sens95", "sens98"]
    assert {"ppv_at_prevalence", "sensitivity_low", "sensitivity_high"} <= set(points.columns)
    curve = pd.read_csv(out / "decision_curve.csv")
    assert {"model", "clinical only", "cytometry for all", "cytometry for none"} <= set(curve.columns)
    summary = (out / "summary.md").read_text()
    assert "From probability to decision" in summary and "sens95" in summary
    assert results["drift"]["verdict"].startswith("cohort: ") and "Drift check against" in summary
    patients = pd.read_csv(out / "patients.csv", dtype={"ID": str}, keep_default_na=False)
    assert set(patients["DISTRIBUTION"]) <= {"in", "out"} and "DRIFT_REASON" in patients.columns
    assert results["drift"]["verdict"] in result.stdout
    again = run_main(lymphocytosis_main.main, ["evaluate", "--model-dir", str(trained / "model"), "--embeddings",
                                               str(new_cohort), "--out-dir", str(out)])
    assert again.code == 0, again.stderr  # an earlier evaluation is replaced


def test_training_patients_refused_by_name(trained, tmp_path):
    same_ids = evaluate(trained / "model", trained / "embeddings.h5", tmp_path / "a")
    assert_one_line_error(same_ids, "were in the model's training set", "F0 (same ID)")
    renamed = write_fake_embeddings(tmp_path / "renamed", train_prefix="R")  # the training cells, other names
    result = evaluate(trained / "model", renamed, tmp_path / "b")
    assert_one_line_error(result, "R0 (same cell images as training patient F0)")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_model_without_training_list_refused(trained, new_cohort, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained / "model", copy)
    document = json.loads((copy / "model.json").read_text())
    del document["decision"]
    (copy / "model.json").write_text(json.dumps(document))
    assert_one_line_error(evaluate(copy, new_cohort, tmp_path / "eval"), "without the list of its training patients")


def test_evaluate_refuses_foreign_out_dir(trained, new_cohort, tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "notes.txt").write_text("mine")
    assert_one_line_error(evaluate(trained / "model", new_cohort, tmp_path / "eval"),
                          "holds other files than this tool wrote there (notes.txt)")
    assert (tmp_path / "eval" / "notes.txt").read_text() == "mine"


def test_evaluate_help_and_console_command():
    result = run_main(lymphocytosis_main.main, ["evaluate", "--help"])
    assert result.code == 0 and "--model-dir" in result.stdout and "--prevalence" in result.stdout
    assert "evaluate" in run_main(lymphocytosis_main.main, ["--help"]).stdout


def test_evaluate_refuses_foreign_entries_below_an_earlier_evaluation(trained, new_cohort, tmp_path):
    """An earlier evaluation carries the manifest of what was written in it: a file added deeper down is not the
    tool's, so the folder is not replaced whole."""
    out = tmp_path / "eval"
    assert evaluate(trained / "model", new_cohort, out).code == 0
    manifest = json.loads((out / ".lymphocytosis-manifest.json").read_text())
    assert manifest["kind"] == "evaluation" and manifest["entries"]["results.json"] == "f"
    (out / "figures" / "notes.txt").write_text("mine")
    assert_one_line_error(evaluate(trained / "model", new_cohort, out), "figures/notes.txt")
    assert (out / "figures" / "notes.txt").read_text() == "mine"


def test_evaluate_refuses_patients_without_cells(trained, tmp_path):
    one = write_fake_embeddings(tmp_path / "one", n_train=30, seed=7, train_prefix="G", empty=("G3",))
    assert_one_line_error(evaluate(trained / "model", one, tmp_path / "a"), "1 patient(s) to evaluate have no readable "
                          "cell image", "G3 (", "remove them from the cohort's CSV")
    many = write_fake_embeddings(tmp_path / "many", n_train=30, seed=7, train_prefix="G", empty=("G1", "G2"))
    assert_one_line_error(evaluate(trained / "model", many, tmp_path / "b"), "2 of 30 labelled patients",
                          "--max-without-cells 0.05")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
