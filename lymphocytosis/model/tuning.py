"""Optuna search over LightGBM parameters and bag-feature choices, and nested CV to judge it honestly.

The objective is the mean balanced accuracy over repeated stratified folds of the patients it is given;
hopeless trials are pruned between folds. `study.best_value` is optimistic (it is the maximum of many noisy
estimates on the same folds), so the accuracy that tuning buys is measured only by `nested_cv`: an outer CV
whose every training part runs a whole fresh study, judged on its held-out part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import optuna

from ..contract.provenance import describe_difference
from ..errors import InputError
from ..metrics import Scores, Summary
from ..progress import Progress
from .classifier import FittedModel
from .cohort import Cohort
from .evaluation import Fold, FoldResult, cross_validate, repeated_folds
from .feature_spec import FeatureSpec
from .measurements import settings_for
from .params import DEFAULT_PARAMS
from .threads import one_blas_thread
from .trial_sampler import TrialSeededTPESampler
from .tuned_params import Settings

log = logging.getLogger(__name__)

CELL_SCORE_STATS = {
    "quantiles": ("mean", "std", "q10", "q25", "q50", "q75", "q90", "top10"),
    "centre+tail": ("mean", "q50", "q90"),
    "mean": ("mean",),
    "tails": ("mean", "q10", "q90", "top10", "max"),
}


MEASUREMENT_CHOICES = {"median": (("q50",), False), "score": ((), True), "median+score": (("q50",), True)}


def suggest_settings(trial: optuna.Trial, measured: bool = False) -> Settings:
    """The search space, sized for ~100-130 training patients (small trees, strong regularisation); with
    measurement files (`measured`), also how their features are used."""
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
    if measured:
        stats, score = MEASUREMENT_CHOICES[trial.suggest_categorical("measurements", list(MEASUREMENT_CHOICES))]
        spec = replace(spec, measurement_stats=stats, measurement_score=score)
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
    return Settings(spec, params, f"trial {trial.number}")


def settings_from_trial(trial: optuna.trial.FrozenTrial) -> Settings:
    return suggest_settings(optuna.trial.FixedTrial(trial.params, number=trial.number), "measurements" in trial.params)


def make_objective(cohort: Cohort, folds: list[Fold]):
    def objective(trial: optuna.Trial) -> float:
        settings = suggest_settings(trial, any(s.measured for s in cohort.sets))
        fold_scores = []

        def report(step: int, result: FoldResult) -> None:
            labels = cohort.labels(result.fold.test_ids)
            fold_scores.append(Scores.of(labels, result.prediction.probabilities).balanced_accuracy)
            trial.report(float(np.mean(fold_scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = cross_validate(cohort, settings.spec, settings.params, folds, on_fold=report)
        return result.summary.balanced_accuracy.mean

    return objective


def study_name(cohort: Cohort, folds: int, repeats: int, seed: int) -> str:
    """One study per embeddings provenance, labelled patients and CV design: objectives are not comparable otherwise."""
    views = training_views(cohort)  # a study made without views keeps its name; one with them is another study
    identity = {**cohort.provenance, "training views": views} if views else cohort.provenance
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"lymphocytosis-{digest}-{cohort.fingerprint}-f{folds}r{repeats}s{seed}"


def create_study(name: str, storage, seed: int) -> optuna.Study:
    """Create or load the study. Each trial samples from its own seed, (seed, trial number): a resumed study
    continues its search (deterministically) instead of replaying its first trials, and workers sharing the
    study never draw the same parameters (see trial_sampler)."""
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=4))
    study.sampler = TrialSeededTPESampler(seed)
    with warnings.catch_warnings():  # experimental in Optuna: a warning about the API, not about the study
        warnings.simplefilter("ignore")
        if study.metric_names != [METRIC_NAME]:
            study.set_metric_names([METRIC_NAME])  # what optuna-dashboard shows instead of "Objective 0"
    return study


METRIC_NAME = "balanced accuracy (optimistic)"  # the CV the search maximises, on the patients it chooses for
RECORD_KEY = "lymphocytosis"  # the study's user attribute: what its trials were computed on


def training_views(cohort: Cohort) -> dict[str, str]:
    """What the study records of the training views: the objective differs with them (Cohort.training_views)."""
    return cohort.training_views


def study_record(cohort: Cohort, folds: int, repeats: int, seed: int) -> dict:
    """What a study's objective depends on: the labelled patients, each embeddings or measurement file's identity
    and the CV design (compared when a study is resumed); the files' paths are recorded for the reader."""
    return {"dataset_fingerprint": cohort.fingerprint, "embeddings_provenance": cohort.provenance,
            "cv_design": {"folds": folds, "repeats": repeats, "seed": seed}, "training_views": training_views(cohort),
            "files": {"embeddings": [str(s.path) for s in cohort.sets if not s.measured],
                      "measurements": [str(s.path) for s in cohort.sets if s.measured]}}


def record_differences(saved: dict, record: dict) -> list[str]:
    """What differs between a study's record and this run's, in words (saved value first)."""
    differences = []
    if saved.get("dataset_fingerprint") != record["dataset_fingerprint"]:
        differences.append(f"other labelled patients (fingerprint {saved.get('dataset_fingerprint')} vs "
                           f"{record['dataset_fingerprint']})")
    saved_sets, sets = saved.get("embeddings_provenance") or {}, record["embeddings_provenance"]
    if list(saved_sets) != list(sets):
        differences.append(f"other embeddings or measurement files ({', '.join(saved_sets)} vs {', '.join(sets)})")
    else:
        differences += [f"{name} of another provenance ({describe_difference(saved_sets[name], sets[name])})"
                        for name in sets if saved_sets[name] != sets[name]]
    if (saved.get("training_views") or {}) != record["training_views"]:
        differences.append("other training views (" + (", ".join(record["training_views"]) or "none now") + ")")
    design = saved.get("cv_design") or {}
    if design != record["cv_design"]:
        differences.append("another CV design (" + ", ".join(f"{key} {design.get(key)} vs {value}"
                                                            for key, value in record["cv_design"].items()) + ")")
    return differences


def claim_study(study: optuna.Study, record: dict, adopt_unrecorded: bool, where: str) -> None:
    """Tie a new study to `record`, or check that a resumed one was made on the same data and CV design: trials
    on other patients, embeddings or folds are not comparable, and their best would be saved as these ones'.
    A study without a record (made by an earlier version) is adopted when empty or under the default name
    (which is derived from the data and design), else refused."""
    record = json.loads(json.dumps(record))  # as the storage returns it (lists, not tuples)
    saved = study.user_attrs.get(RECORD_KEY)
    remedy = "choose another --study-name (or leave it out: the default name is derived from the data and design)"
    if saved is None:
        if study.get_trials(deepcopy=False) and not adopt_unrecorded:
            raise InputError(f"--study-name {study.study_name}: the study in {where} has trials but no record of the "
                             f"data and CV design they were computed on (an earlier version made it); {remedy}")
        study.set_user_attr(RECORD_KEY, record)
        return
    differences = record_differences(saved, record)
    if differences:
        raise InputError(f"--study-name {study.study_name}: the study in {where} was made on {'; '.join(differences)}; "
                         f"{remedy}")


def log_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no complete trial yet"
    value = f"{trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
    log.debug("trial %d: %s; %s", trial.number, value, best)  # in the run's log; the progress bar shows the rest


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def failed_by_others(exc: BaseException) -> bool:
    """This worker's trial was marked FAIL by another worker (its heartbeat went silent: the process was paused,
    SIGSTOP or a suspended laptop, longer than the grace period), so Optuna refuses its late result."""
    return (isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) or "Cannot tell a" in str(exc)
            or (isinstance(exc, AssertionError) and "Should not reach" in str(exc)))


class QuietFailedByOthers(logging.Filter):
    """Optuna logs such a trial's error with its traceback; `optimize_until_done` says it in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and failed_by_others(record.exc_info[1]))


def optimize_until_done(study: optuna.Study, optimize, n_trials: int) -> None:
    """`optimize(left)` until the study holds `n_trials` finished trials; a trial failed by other workers while
    this one was paused is dropped with a warning and tuning goes on (it counts nowhere: failed trials never do)."""
    optimizer_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, QuietFailedByOthers) for f in optimizer_log.filters):
        optimizer_log.addFilter(QuietFailedByOthers())
    while True:
        left = n_trials - finished_trials(study)
        if left <= 0:
            return
        try:
            optimize(left)
            return
        except (ValueError, AssertionError, RuntimeError) as exc:
            if not failed_by_others(exc):
                raise
            log.warning("study %s: this worker's trial was marked failed by another worker while this one was paused "
                        "(longer than the heartbeat's grace period); its result is dropped, tuning goes on",
                        study.study_name)


def run_study(study: optuna.Study, cohort: Cohort, folds: list[Fold], n_trials: int, timeout: float | None = None,
              callbacks=(), progress: Progress = Progress()) -> None:
    """Run until the study holds `n_trials` finished (complete or pruned) trials in all, counting every worker's:
    a resumed study tops up, never restarts, and N workers sharing the study stop within N-1 trials of the total
    (each stops after its current trial once the total is reached). Failed trials, such as those of a killed
    worker, do not count.

    Each fold computes on one thread (LightGBM's `num_threads` is 1, and so are BLAS's here): on 2 busy cores,
    OpenBLAS's own threads made a worker's PCA and Gram matrices 2x slower in CPU and wall time
    (benchmarks/tune_workers.py, 20 trials: 96-99 s CPU with OpenBLAS's default threads, 60 s with one). A
    trial's folds run in up to $LYMPHOCYTOSIS_THREADS threads at once (threads.py); workers sharing a machine
    are best started with LYMPHOCYTOSIS_THREADS=1."""
    remaining = max(0, n_trials - finished_trials(study))
    if remaining == 0:
        log.debug("study %s already has %d finished trials", study.study_name, finished_trials(study))
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stop_at_total = optuna.study.MaxTrialsCallback(n_trials, states=FINISHED)
    with progress.bar(total=n_trials, initial=n_trials - remaining, desc="tuning", unit="trial") as bar, \
            one_blas_thread, cohort.keeping_ridge_problems():  # one BLAS thread per fold, like LightGBM's

        def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            bar.n = min(n_trials, finished_trials(study))  # every worker's trials: the bar counts the study
            with contextlib.suppress(ValueError):
                bar.set_postfix_str(f"best {study.best_value:.4f} (optimistic)", refresh=False)
            bar.refresh()

        optimize_until_done(study, lambda left: study.optimize(
            make_objective(cohort, folds), n_trials=left, timeout=timeout, callbacks=[stop_at_total, show, *callbacks],
            gc_after_trial=False), n_trials)


@dataclass
class NestedCVResult:
    """Held-out accuracy of "tune, then fit the best" next to the defaults on the same outer folds."""

    n_patients: int
    design: dict  # outer/inner folds and repeats, trials per outer fold
    tuned: Summary
    default: Summary
    chosen: list[dict] = field(default_factory=list)  # per outer fold: inner best value and parameters

    @property
    def mean_inner_best_value(self) -> float:
        return float(np.mean([c["inner_best_value"] for c in self.chosen]))

    def to_dict(self) -> dict:
        return {"n_patients": self.n_patients, **self.design, "tuned": self.tuned.to_dict(),
                "default": self.default.to_dict(), "mean_inner_best_value": self.mean_inner_best_value,
                "chosen": self.chosen}


def tune_on(cohort: Cohort, train: list[str], n_trials: int, inner_folds: int, inner_repeats: int, seed: int,
            name: str, progress: Progress = Progress()) -> optuna.Study:
    inner = repeated_folds(train, cohort.labels(train), inner_folds, inner_repeats, seed)
    study = create_study(name, optuna.storages.InMemoryStorage(), seed)
    run_study(study, cohort, inner, n_trials, progress=progress)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise InputError(f"nested CV: no inner trial completed in outer fold {name}; raise --trials")
    return study


def nested_cv(cohort: Cohort, n_trials: int, outer_folds: int = 5, outer_repeats: int = 1, inner_folds: int = 5,
              inner_repeats: int = 1, seed: int = 0, progress: Progress = Progress()) -> NestedCVResult:
    """Balanced accuracy of "tune, then fit the best" on patients the tuning never saw, next to the defaults
    on the same outer folds."""
    ids = cohort.labelled_ids
    outer = repeated_folds(ids, cohort.labels(ids), outer_folds, outer_repeats, seed + 1000)
    position = {patient_id: i for i, patient_id in enumerate(ids)}
    probabilities = {"tuned": np.full((outer_repeats, len(ids)), np.nan), "default": np.full((outer_repeats, len(ids)), np.nan)}
    chosen = []
    for fold in outer:
        train, rows = list(fold.train_ids), [position[p] for p in fold.test_ids]
        study = tune_on(cohort, train, n_trials, inner_folds, inner_repeats, seed, f"nested-{fold.repeat}-{fold.fold}",
                        progress)
        chosen.append({"repeat": fold.repeat, "fold": fold.fold, "inner_best_value": study.best_value, **study.best_trial.params})
        for name, settings in (("tuned", settings_from_trial(study.best_trial)), ("default", settings_for(cohort, Settings()))):
            model = FittedModel.fit(cohort, train, settings.spec, settings.params)
            probabilities[name][fold.repeat, rows] = model.predict_proba(cohort, fold.test_ids).probabilities
        log.info("outer fold %d.%d: inner best %.4f; held-out balanced accuracy tuned %.3f, default %.3f",
                 fold.repeat, fold.fold, study.best_value,
                 *(Scores.of(cohort.labels(fold.test_ids), probabilities[n][fold.repeat, rows]).balanced_accuracy
                   for n in ("tuned", "default")))
    labels = cohort.labels(ids)
    summaries = {n: Summary.of([Scores.of(labels, p[r]) for r in range(outer_repeats)]) for n, p in probabilities.items()}
    design = {"outer_folds": outer_folds, "outer_repeats": outer_repeats, "inner_folds": inner_folds,
              "inner_repeats": inner_repeats, "trials_per_outer_fold": n_trials}
    return NestedCVResult(len(ids), design, summaries["tuned"], summaries["default"], chosen)
