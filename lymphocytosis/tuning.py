"""Optuna search over LightGBM parameters and bag-feature choices, and nested CV to judge it honestly.

The objective is the mean balanced accuracy over repeated stratified folds of the patients it is given;
hopeless trials are pruned between folds. `study.best_value` is optimistic (it is the maximum of many noisy
estimates on the same folds), so the accuracy that tuning buys is measured only by `nested_cv`: an outer CV
whose every training part runs a whole fresh study, judged on its held-out part.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import optuna

from .bag_features import FeatureSpec
from .classifier import DEFAULT_PARAMS, THRESHOLD, PatientClassifier
from .cohort import Cohort
from .embedding_store import identity
from .errors import InputError
from .settings import default_settings
from .evaluation import Fold, cross_validate, repeated_folds, score, summarise

log = logging.getLogger(__name__)

CELL_SCORE_STATS = {
    "quantiles": ("mean", "std", "q10", "q25", "q50", "q75", "q90", "top10"),
    "centre+tail": ("mean", "q50", "q90"),
    "mean": ("mean",),
    "tails": ("mean", "q10", "q90", "top10", "max"),
}


def suggest_settings(trial: optuna.Trial) -> tuple[FeatureSpec, dict]:
    """The search space, sized for ~100-130 training patients (small trees, strong regularisation)."""
    clinical = ["age", "sex_male", "lymph_count"]
    if trial.suggest_categorical("bag_size", [False, True]):
        clinical.append("bag_size")
    pca = trial.suggest_categorical("embedding_pca", [0, 4, 8])
    spec = FeatureSpec(
        clinical=tuple(clinical),
        embedding_stats=("mean",) if pca else (),
        embedding_pca=pca,
        cell_score=True,
        cell_score_stats=CELL_SCORE_STATS[trial.suggest_categorical("cell_score_stats", list(CELL_SCORE_STATS))],
        cell_score_alpha=trial.suggest_categorical("cell_score_alpha", [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
    )
    params = {
        **DEFAULT_PARAMS,
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_iterations": trial.suggest_int("num_iterations", 30, 400, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 2, 8),
        "max_depth": trial.suggest_int("max_depth", 1, 4),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 3, 20),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }
    return spec, params


def settings_from_trial(trial: optuna.trial.FrozenTrial) -> tuple[FeatureSpec, dict]:
    return suggest_settings(optuna.trial.FixedTrial(trial.params))


def make_objective(cohort: Cohort, folds: list[Fold]):
    def objective(trial: optuna.Trial) -> float:
        spec, params = suggest_settings(trial)
        fold_scores = []

        def report(step: int, fold: Fold, probabilities: np.ndarray) -> None:
            fold_scores.append(score(cohort.labels(fold.test_ids), probabilities)["balanced_accuracy"])
            trial.report(float(np.mean(fold_scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return cross_validate(cohort, spec, params, folds, on_fold=report).summary["balanced_accuracy"]["mean"]

    return objective


def study_name(cohort: Cohort, folds: int, repeats: int, seed: int) -> str:
    """One study per embeddings provenance, labelled patients and CV design: objectives are not comparable otherwise."""
    digest = hashlib.sha256(json.dumps(identity(cohort.provenance), sort_keys=True).encode()).hexdigest()[:10]
    return f"lymphocytosis-{digest}-{cohort.fingerprint}-f{folds}r{repeats}s{seed}"


def create_study(name: str, storage, seed: int) -> optuna.Study:
    """Create or load the study. The sampler's seed moves on with the trials already there: a resumed study
    continues its search (deterministically) instead of replaying its first random trials."""
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=4))
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=15, multivariate=True)
    return study


def log_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no complete trial yet"
    value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
    log.info("trial %d: %s; %s", trial.number, value, best)


def run_study(study: optuna.Study, cohort: Cohort, folds: list[Fold], n_trials: int, timeout: float | None = None,
              callbacks=()) -> None:
    """Run until the study holds `n_trials` finished trials in all (so a resumed study tops up, not restarts)."""
    finished = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    remaining = max(0, n_trials - finished)
    if remaining == 0:
        log.info("study %s already has %d finished trials", study.study_name, finished)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(make_objective(cohort, folds), n_trials=remaining, timeout=timeout, callbacks=list(callbacks),
                   gc_after_trial=False)


def nested_cv(cohort: Cohort, n_trials: int, outer_folds: int = 5, outer_repeats: int = 1, inner_folds: int = 5,
              inner_repeats: int = 1, seed: int = 0) -> dict:
    """Balanced accuracy of "tune, then fit the best" on patients the tuning never saw, next to the defaults
    on the same outer folds."""
    ids = cohort.labelled_ids
    outer = repeated_folds(ids, cohort.labels(ids), outer_folds, outer_repeats, seed + 1000)
    position = {pid: i for i, pid in enumerate(ids)}
    tuned = np.full((outer_repeats, len(ids)), np.nan)
    default = np.full((outer_repeats, len(ids)), np.nan)
    chosen = []
    default_spec, default_params = default_settings()
    for fold in outer:
        train = list(fold.train_ids)
        inner = repeated_folds(train, cohort.labels(train), inner_folds, inner_repeats, seed)
        study = create_study(f"nested-{fold.repeat}-{fold.fold}", optuna.storages.InMemoryStorage(), seed)
        run_study(study, cohort, inner, n_trials)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            raise InputError(f"nested CV: no inner trial completed in outer fold {fold.repeat}.{fold.fold}; raise --trials")
        spec, params = settings_from_trial(study.best_trial)
        chosen.append({"repeat": fold.repeat, "fold": fold.fold, "inner_best_value": study.best_value, **study.best_trial.params})
        rows = [position[p] for p in fold.test_ids]
        tuned[fold.repeat, rows] = PatientClassifier(cohort, spec, params).fit_predict(train, fold.test_ids)[0]
        default[fold.repeat, rows] = PatientClassifier(cohort, default_spec, default_params).fit_predict(train, fold.test_ids)[0]
        log.info("outer fold %d.%d: inner best %.4f; held-out balanced accuracy tuned %.3f, default %.3f",
                 fold.repeat, fold.fold, study.best_value,
                 score(cohort.labels(fold.test_ids), tuned[fold.repeat, rows])["balanced_accuracy"],
                 score(cohort.labels(fold.test_ids), default[fold.repeat, rows])["balanced_accuracy"])
    labels = cohort.labels(ids)
    return {
        "n_patients": len(ids),
        "outer_folds": outer_folds,
        "outer_repeats": outer_repeats,
        "inner_folds": inner_folds,
        "inner_repeats": inner_repeats,
        "trials_per_outer_fold": n_trials,
        "threshold": THRESHOLD,
        "tuned": summarise([score(labels, tuned[r]) for r in range(outer_repeats)]),
        "default": summarise([score(labels, default[r]) for r in range(outer_repeats)]),
        "mean_inner_best_value": float(np.mean([c["inner_best_value"] for c in chosen])),
        "chosen": chosen,
    }
