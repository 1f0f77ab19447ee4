"""tune.py: a study in an RDB resumes (tops up to --trials, same name), best settings are saved where `model.py
--params` uses them, bad storage is a one-line error, nested CV reports tuned vs default, the objective reports
per-fold values for pruning, and the search is deterministic in its seed.

Runs on hand-made embeddings (`fake_embeddings`: 24 training patients, 16 dimensions) with 3 folds x 1 repeat.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

import model as model_cli
import tune as tune_cli
from conftest import assert_one_line_error, run_main
from lymphocytosis.model import tuning
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import repeated_folds
from lymphocytosis.model.feature_spec import FeatureSpec

CV_DESIGN = ["--folds", "3", "--repeats", "1", "--seed", "0"]


def tune(embeddings: Path, *args: str):
    return run_main(tune_cli.main, ["--embeddings", str(embeddings), *CV_DESIGN, *args])


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.is_finished()]


@pytest.fixture(scope="module")
def cohort(fake_embeddings):
    return load_cohort(fake_embeddings)


def test_study_resumes_and_best_params_are_used(fake_embeddings, cohort, tmp_path):
    url = f"sqlite:///{tmp_path}/t.sqlite3"
    best = tmp_path / "out" / "best_params.json"
    args = ["--storage", url, "--best-params", str(best)]
    result = tune(fake_embeddings, "--trials", "3", *args)
    assert result.code == 0, result.stderr
    name = tuning.study_name(cohort, 3, 1, 0)
    assert optuna.get_all_study_names(url) == [name]
    first = optuna.load_study(study_name=name, storage=url)
    assert len(finished(first)) == 3
    first_three = [(t.number, t.params, t.datetime_start) for t in first.trials]

    result = tune(fake_embeddings, "--trials", "5", *args)
    assert result.code == 0, result.stderr
    assert optuna.get_all_study_names(url) == [name]  # the same study, continued
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 5 and len(finished(study)) == 5  # topped up to 5: not 8, not restarted
    assert [(t.number, t.params, t.datetime_start) for t in study.trials[:3]] == first_three
    resumed = [t.params for t in study.trials[3:]]
    assert all(params not in [t[1] for t in first_three] for params in resumed)  # continued, not replayed
    assert f"study {name}: 5 trials" in result.stdout

    result = tune(fake_embeddings, "--trials", "5", *args)  # already there: nothing to do
    assert result.code == 0, result.stderr
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 5

    saved = json.loads(best.read_text())
    assert saved["study"] == name and saved["trial"] == study.best_trial.number
    assert saved["cv_value_optimistic"] == study.best_value
    assert saved["embeddings_provenance"] == cohort.provenance
    assert saved["dataset_fingerprint"] == cohort.fingerprint
    settings = tuning.settings_from_trial(study.best_trial)
    spec, params = settings.spec, settings.params
    assert FeatureSpec.from_dict(saved["feature_spec"]) == spec and saved["params"] == params
    assert saved["params"]["learning_rate"] == study.best_trial.params["learning_rate"]

    cv_json = tmp_path / "cv.json"
    result = run_main(model_cli.main, ["cv", "--embeddings", str(fake_embeddings), "--params", str(best), *CV_DESIGN,
                                       "--json", str(cv_json), "--cv-dir", str(tmp_path / "cv")])
    assert result.code == 0, result.stderr
    used = json.loads(cv_json.read_text())["settings"]
    assert used["source"] == str(best)
    assert used["params"] == params and FeatureSpec.from_dict(used["feature_spec"]) == spec


@pytest.mark.parametrize("url", ["bogus://nowhere", "not a url at all"])
def test_bad_storage_url(fake_embeddings, tmp_path, url):
    result = tune(fake_embeddings, "--trials", "1", "--storage", url, "--best-params", str(tmp_path / "b.json"))
    assert_one_line_error(result, "--storage", url)
    assert not (tmp_path / "b.json").exists()


def test_nested_cv(fake_embeddings, tmp_path):
    out = tmp_path / "nested.json"
    best, url = tmp_path / "best.json", f"sqlite:///{tmp_path}/never.sqlite3"
    result = tune(fake_embeddings, "--nested", "--trials", "2", "--outer-folds", "3", "--json", str(out),
                  "--storage", url, "--best-params", str(best))
    assert result.code == 0, result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"tuned", "default"} <= rows
    document = json.loads(out.read_text())
    for name in ("tuned", "default"):
        for metric in ("balanced_accuracy", "roc_auc"):
            assert set(document[name][metric]) == {"mean", "std"}
            assert 0 <= document[name][metric]["mean"] <= 1
    assert document["n_patients"] == 24 and document["outer_folds"] == 3 and document["inner_folds"] == 3
    assert document["trials_per_outer_fold"] == 2 and len(document["chosen"]) == 3
    assert not best.exists() and not Path(f"{tmp_path}/never.sqlite3").exists()  # reports, saves nothing


# --- the objective and the sampler ---------------------------------------------------------------------------------


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


@pytest.mark.parametrize("pruner, expected_steps", [(optuna.pruners.NopPruner(), 3), (AlwaysPrune(), 1)])
def test_objective_reports_each_fold(cohort, monkeypatch, pruner, expected_steps):
    folds = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, 0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner)
    trial = study.ask()
    reports = []
    original = trial.report
    monkeypatch.setattr(trial, "report", lambda value, step: (reports.append((step, value)), original(value, step)))
    objective = tuning.make_objective(cohort, folds)
    if expected_steps < len(folds):
        with pytest.raises(optuna.TrialPruned):
            objective(trial)
    else:
        value = objective(trial)
        assert 0 <= value <= 1
    assert [step for step, _ in reports] == list(range(expected_steps))
    assert all(0 <= value <= 1 for _, value in reports)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == dict(reports)


def run_in_memory(cohort, seed: int, n_trials: int = 2) -> optuna.Study:
    folds = repeated_folds(cohort.labelled_ids, cohort.labels(cohort.labelled_ids), 3, 1, seed)
    study = tuning.create_study("determinism", optuna.storages.InMemoryStorage(), seed)
    tuning.run_study(study, cohort, folds, n_trials)
    return study


def test_search_deterministic_in_seed(cohort):
    a, b, c = run_in_memory(cohort, 0), run_in_memory(cohort, 0), run_in_memory(cohort, 1)
    assert len(a.trials) == 2
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]
