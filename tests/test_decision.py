"""Operating points and recalibration, learned without the patients they are judged on; saved with the CV and
the model, validated when read back; `predict --operating-point`; the model card.

Runs on hand-made embeddings (`write_fake_embeddings`: 24 + 4 patients, 16 dimensions, no torch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import model as model_cli
from conftest import SMALL, assert_one_line_error, run_main, write_fake_embeddings, write_small_params
from lymphocytosis.errors import InputError
from lymphocytosis.model import decision as decision_module
from lymphocytosis.model import threads
from lymphocytosis.model.calibration import Recalibration, choose_recalibration, expected_calibration_error
from lymphocytosis.model.cohort import Cohort, load_cohort
from lymphocytosis.model.decision import learn_fold_rules, learn_rule
from lymphocytosis.model.evaluation import repeated_folds
from lymphocytosis.model.operating_points import OperatingPoints, judge, threshold_for_sensitivity
from lymphocytosis.model.results import load_cv
from lymphocytosis.model.tuned_params import Settings


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Fake embeddings, a parameters file that lets trees split, a saved CV and a fitted model."""
    base = tmp_path_factory.mktemp("decision")
    embeddings = write_fake_embeddings(base)
    write_small_params(base / "params.json", embeddings)
    data = ["--embeddings", str(embeddings), "--params", str(base / "params.json")]
    result = run_main(model_cli.main, ["cv", *data, "--folds", "3", "--repeats", "2", "--cv-dir", str(base / "cv")])
    assert result.code == 0, result.stderr
    assert "sens95" in result.stdout and "recalibrated" in result.stdout
    result = run_main(model_cli.main, ["fit", *data, "--model-dir", str(base / "model")])
    assert result.code == 0, result.stderr
    return base


def saved_cv_dir(base: Path) -> Path:
    """The results folder `cv` saved under --cv-dir (one folder per settings and design)."""
    (folder,) = [p for p in (base / "cv").iterdir() if p.is_dir()]
    return folder


def small_params() -> dict:
    return {**Settings().params, **SMALL}


def test_threshold_for_sensitivity_constructed():
    labels = np.array([1] * 10 + [0] * 5)
    probabilities = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.0, 0.05, 0.15, 0.25, 0.35])
    assert threshold_for_sensitivity(labels, probabilities, 0.9) == 0.2  # one of ten may fall below
    assert threshold_for_sensitivity(labels, probabilities, 0.95) == 0.1  # floor(0.5) = 0 misses
    assert threshold_for_sensitivity(labels, probabilities, 0.8) == 0.3
    for s in (0.8, 0.9, 0.95, 1.0):
        t = threshold_for_sensitivity(labels, probabilities, s)
        assert (probabilities[labels == 1] >= t).mean() >= s


def test_judge_counts_held_out_decisions():
    labels = np.array([1, 1, 1, 0, 0])
    probabilities = np.array([[0.9, 0.6, 0.2, 0.5, 0.1]])
    result = judge(labels, probabilities, np.full((1, 5), 0.55), prevalence=0.1, n_boot=50)
    assert result["sensitivity"].value == pytest.approx(2 / 3)
    assert result["specificity"].value == 1.0
    assert result["sent_to_cytometry"].value == pytest.approx(2 / 5)
    assert result["ppv_at_prevalence"].value == 1.0
    assert result["npv_at_prevalence"].value == pytest.approx(0.9 / (0.9 + 0.1 / 3))
    assert result["sensitivity"].low <= result["sensitivity"].value <= result["sensitivity"].high


def test_fold_rules_never_see_the_test_fold(fake_embeddings, monkeypatch):
    """Spies on every learned step of the inner CV: features are fitted on the outer fold's training patients
    exactly, and every booster on a part of them; no held-out patient of that fold is ever seen."""
    cohort = load_cohort(fake_embeddings)
    folds = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, 0)
    features_seen, boosters_seen = [], []
    fit_features, train_boosters = decision_module.fit_features, decision_module.train_boosters

    def features_spy(cohort, spec, train_ids):
        features_seen.append(list(train_ids))
        return fit_features(cohort, spec, train_ids)

    def boosters_spy(table, labels, params):
        boosters_seen.append(set(table.ids))
        return train_boosters(table, labels, params)

    monkeypatch.setattr(decision_module, "fit_features", features_spy)
    monkeypatch.setattr(decision_module, "train_boosters", boosters_spy)
    monkeypatch.setenv(threads.ENVIRONMENT, "1")  # the spies record in call order: one fold after the other
    rules = learn_fold_rules(cohort, Settings().spec, small_params(), folds, 0)
    assert len(rules) == len(folds) and features_seen == [list(f.train_ids) for f in folds]
    per_fold = len(boosters_seen) // len(folds)
    assert per_fold == decision_module.INNER_FOLDS and len(boosters_seen) == per_fold * len(folds)
    for k, fold in enumerate(folds):
        inner = boosters_seen[k * per_fold:(k + 1) * per_fold]
        for train in inner:
            assert train < set(fold.train_ids) and not train & set(fold.test_ids)
        assert set.union(*[set(fold.train_ids) - t for t in inner]) == set(fold.train_ids)  # each predicted once


def test_fold_rule_ignores_the_test_fold_labels(fake_embeddings):
    """A constructed case: flipping every label of the held-out fold leaves its thresholds unchanged, while
    flipping training labels changes them."""
    cohort = load_cohort(fake_embeddings)
    fold = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, 0)[0]

    def flipped(ids) -> Cohort:
        clinical = cohort.clinical.copy()
        clinical.loc[list(ids), "label"] = 1 - clinical.loc[list(ids), "label"]
        return Cohort(clinical, cohort.sets, cohort.dataset_root)

    rule = learn_rule(cohort, Settings().spec, small_params(), fold.train_ids)
    assert learn_rule(flipped(fold.test_ids), Settings().spec, small_params(), fold.train_ids) == rule
    other = learn_rule(flipped(fold.train_ids[:4]), Settings().spec, small_params(), fold.train_ids)
    assert other.operating_points != rule.operating_points


def test_recalibration_chosen_and_checked():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    honest = np.clip(0.15 + 0.7 * labels + rng.normal(0, 0.15, 400), 0.01, 0.99)
    squeezed = 0.4 + 0.2 * honest  # ranks well, probabilities pulled to 0.5
    fitted, scores = choose_recalibration(labels, squeezed)
    assert fitted.method in ("platt", "isotonic") and scores[fitted.method] < scores["none"]
    assert expected_calibration_error(labels, fitted.apply(squeezed)) < expected_calibration_error(labels, squeezed)
    assert Recalibration.from_dict(fitted.to_dict()) == fitted
    for bad in ({"method": "platt", "x": [1.0], "y": []}, {"method": "isotonic", "x": [0.2, 0.1], "y": [0.1, 0.2]},
                {"method": "isotonic", "x": [0.1, 0.2], "y": [0.5, 1.5]}, {"method": "magic", "x": [], "y": []},
                {"method": "platt", "x": [1.0, float("nan")], "y": []}):
        with pytest.raises(InputError):
            Recalibration.from_dict(bad)


@pytest.mark.parametrize("bad", [[], [{"name": "sens95", "threshold": 0.3, "target": 0.95}],
                                 [{"name": "balanced", "threshold": 0.4, "target": None}],
                                 [{"name": "balanced", "threshold": 0.5, "target": None},
                                  {"name": "sens90", "threshold": 0.3, "target": 0.95}],
                                 [{"name": "balanced", "threshold": 0.5, "target": None},
                                  {"name": "sens95", "threshold": 1.5, "target": 0.95}],
                                 [{"name": "balanced", "threshold": 0.5, "target": None},
                                  {"name": "sens95", "threshold": True, "target": 0.95}]])
def test_operating_points_validated(bad):
    with pytest.raises(InputError):
        OperatingPoints.from_list(bad)


def test_cv_saves_fold_rules(base, tmp_path):
    saved = load_cv(saved_cv_dir(base))
    assert saved.decisions is not None and len(saved.decisions.rules) == 6
    thresholds = saved.decisions.thresholds("sens95")
    assert np.isfinite(thresholds).all() and ((thresholds >= 0) & (thresholds <= 1)).all()
    copy = tmp_path / "cv"
    shutil.copytree(saved_cv_dir(base), copy)
    document = json.loads((copy / "decision.json").read_text())
    document["folds"][0]["test_ids"] = document["folds"][1]["test_ids"]  # a repeat's held-out patients overlap
    (copy / "decision.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="decision.json: the held-out patients of repeat 0"):
        load_cv(copy)


def test_fit_saves_rule_and_card(base):
    document = json.loads((base / "model" / "model.json").read_text())
    rule = document["decision"]["rule"]
    assert [p["name"] for p in rule["operating_points"]] == ["balanced", "sens95", "sens98"]
    assert sorted(document["decision"]["training_patients"]) == sorted(load_cohort(base / "embeddings.h5").labelled_ids)
    card = (base / "model" / "MODEL_CARD.md").read_text()
    for fragment in ("Intended use", "24 patients: 16 tumoral, 8 reactive", "clinical only", "sens98",
                     "Known limits", "model.py fit --embeddings"):
        assert fragment in card
    assert "No saved cross-validation" not in card  # found in its folder under <artifacts>/cv/


def predict(copy: Path, *extra: str):
    result = run_main(model_cli.main, ["predict", "--embeddings", str(copy / "embeddings.h5"), "--model-dir",
                                       str(copy / "model"), "--out", str(copy / "p.csv"), "--submission",
                                       str(copy / "s.csv"), "--all", *extra])
    return result


def test_predict_operating_points(base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    thresholds = {p["name"]: p["threshold"] for p in
                  json.loads((copy / "model" / "model.json").read_text())["decision"]["rule"]["operating_points"]}
    for name in ("balanced", "sens95"):
        result = predict(copy, "--operating-point", name)
        assert result.code == 0, result.stderr
        frame = pd.read_csv(copy / "p.csv", dtype={"ID": str})
        assert (frame["OPERATING_POINT"] == name).all()
        assert (frame["LABEL"] == (frame["PROBABILITY"] >= thresholds[name]).astype(int)).all()
    assert_one_line_error(predict(copy, "--operating-point", "sens80"), "no operating point 'sens80'", "balanced")


def test_model_saved_before_rules_predicts_balanced(base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    assert predict(copy).code == 0
    before = (copy / "s.csv").read_bytes()
    path = copy / "model" / "model.json"
    document = json.loads(path.read_text())
    del document["decision"]
    path.write_text(json.dumps(document))
    assert predict(copy).code == 0
    assert (copy / "s.csv").read_bytes() == before
    assert_one_line_error(predict(copy, "--operating-point", "sens95"), "no operating point 'sens95'")


def test_damaged_rule_in_model_is_refused(base, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    path = copy / "model" / "model.json"
    document = json.loads(path.read_text())
    document["decision"]["rule"]["operating_points"][1]["threshold"] = "high"
    path.write_text(json.dumps(document))
    assert_one_line_error(predict(copy), "model.json", "threshold must be a number")


def test_sensitivities_from_a_config_file(base, tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text("[fit]\nsensitivities = [0.9, 0.99]\n")
    result = run_main(model_cli.main, ["fit", "--config", str(config), "--embeddings", str(base / "embeddings.h5"),
                                       "--params", str(base / "params.json"), "--model-dir", str(tmp_path / "model")])
    assert result.code == 0, result.stderr
    rule = json.loads((tmp_path / "model" / "model.json").read_text())["decision"]["rule"]
    assert [p["name"] for p in rule["operating_points"]] == ["balanced", "sens90", "sens99"]
    refused = run_main(model_cli.main, ["fit", "--embeddings", str(base / "embeddings.h5"), "--sensitivities", "0.4",
                                        "--model-dir", str(tmp_path / "other")])
    assert_one_line_error(refused, "--sensitivities", "above 0.5")
    assert not (tmp_path / "other").exists()


def test_too_few_patients_for_thresholds_keeps_balanced_only(fake_embeddings, caplog):
    import argparse

    from lymphocytosis.cli.decision_options import fitted_decision

    cohort = load_cohort(fake_embeddings)
    ids = ["F0", "F1", "F2", "F3"]  # one reactive patient: no inner cross-validation possible
    with pytest.raises(InputError, match="too few of one class"):
        learn_rule(cohort, Settings().spec, small_params(), ids)
    saved = fitted_decision(argparse.Namespace(sensitivities=[0.95]), cohort, Settings(Settings().spec, small_params()), ids)
    assert saved.rule.operating_points.names == ["balanced"] and not saved.rule.recalibrated
    assert sorted(saved.training_patients) == ids and "no thresholds other than balanced" in caplog.text


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(decision=[]), "decision must be an object"),
    (lambda d: d["decision"]["training_patients"].update(F0="abc"), "training_patients must map"),
    (lambda d: d["decision"]["rule"]["recalibration"].update(method="platt", x=[1.0, 2.0, 3.0], y=[]), "platt takes"),
    (lambda d: d["decision"]["rule"].update(inner_folds=-1), "inner_folds must be from 0"),
    (lambda d: d["decision"]["rule"]["operating_points"][1].update(threshold=1e400), "finite"),
])
def test_hostile_decision_in_model_json(base, tmp_path, change, fragment):
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    path = copy / "model" / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document).replace("1e+400", "1e400"))
    assert_one_line_error(predict(copy), "model.json", fragment)


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(format="other"), "not decision rules of this tool"),
    (lambda d: d["folds"].pop(), "not those of cv.json's design"),
    (lambda d: d["folds"][0]["rule"]["operating_points"][1].update(threshold=-0.1), "no operating point of this tool"),
    (lambda d: d.update(sensitivities=[0.95]), "other operating points than its sensitivities"),
])
def test_hostile_decision_json(base, tmp_path, change, fragment):
    copy = tmp_path / "cv"
    shutil.copytree(saved_cv_dir(base), copy)
    document = json.loads((copy / "decision.json").read_text())
    change(document)
    (copy / "decision.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=fragment) as caught:
        load_cv(copy)
    assert str(caught.value).startswith(str(copy / "decision.json")) and "\n" not in str(caught.value)


def test_report_reuses_the_saved_cv_only_for_the_same_sensitivities(base, tmp_path):
    """The saved CV in its folder under --cv-dir is reused by `report`; one whose thresholds were chosen for other
    target sensitivities is run again into that folder (and says why). (The parameters file counts as tuned
    settings, so the report also runs the default settings' CV of the same folds, into a folder of its own.)"""
    copy = tmp_path / "copy"
    shutil.copytree(base, copy, ignore=shutil.ignore_patterns("model"))
    data = ["--embeddings", str(copy / "embeddings.h5"), "--params", str(copy / "params.json"), "--folds", "3",
            "--repeats", "2", "--cv-dir", str(copy / "cv"), "--patients", "none"]
    folder = saved_cv_dir(copy)
    before = (folder / "cv.json").stat().st_mtime_ns
    same = run_main(model_cli.main, ["report", *data, "--out-dir", str(copy / "r1")])
    assert same.code == 0, same.stderr
    assert f"the saved cross-validation in {folder}" in same.stdout
    assert (folder / "cv.json").stat().st_mtime_ns == before
    other = run_main(model_cli.main, ["report", *data, "--sensitivities", "0.9", "--out-dir", str(copy / "r2")])
    assert other.code == 0, other.stderr
    assert "thresholds for other target sensitivities" in other.stdout
    assert list(load_cv(folder).decisions.sensitivities) == [0.9]  # the same folder: settings and folds name it


def test_a_sensitivity_point_is_never_stricter_than_balanced():
    """Every tumoral training patient above 0.5: the 95% point would be 0.7, which sends fewer patients to
    cytometry than the default; it is held at the balanced threshold."""
    from lymphocytosis.model.operating_points import OperatingPoints

    labels = np.array([1] * 20 + [0] * 10)
    probabilities = np.concatenate([np.linspace(0.7, 0.99, 20), np.linspace(0.01, 0.3, 10)])
    points = OperatingPoints.choose(labels, probabilities, (0.95, 0.98))
    assert [p.threshold for p in points.points] == [0.5, 0.5, 0.5]
