#!/usr/bin/env python
"""Stage-2 speed: loading embeddings, one 5-fold CV of the default configuration, and a short Optuna study.

    python benchmarks/model_speed.py --embeddings artifacts/embeddings.h5 --trials 100

Loading and the per-patient cell statistics happen once per process; the first CV pays for the latter. Each row
gives the wall time and the CPU time of this process (all its threads): on a shared machine, the CPU time is the
steadier of the two. One CV on new folds is a fraction of a second, which a busy moment of the machine can
lengthen by a fifth: the row after it gives the median of CVs on five more fold designs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from lymphocytosis.model import tuning
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import CVDesign, compare, cross_validate, repeated_folds
from lymphocytosis.model.explanations import explain
from lymphocytosis.model.results import load_cv, save_cv
from lymphocytosis.model.tuned_params import Settings
from lymphocytosis.report.build import build_report


def measured(function):
    """`function()`'s result, wall time and CPU time (of this process: all its threads)."""
    started, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - started, time.process_time() - cpu


def row(label, seconds, cpu):
    print(f"| {label:<58} | {seconds:8.2f} s | {cpu:8.2f} s |", flush=True)


def timed(label, function):
    result, seconds, cpu = measured(function)
    row(label, seconds, cpu)
    return result, seconds


def timed_median(label, functions):
    """The median wall and CPU time of `functions`, each run once, in one row."""
    runs = [measured(function)[1:] for function in functions]
    row(label, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def main():
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("artifacts/embeddings.h5"))
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2, help="CV repeats per trial, as tune.py's default")
    args = parser.parse_args()

    print(f"| {'step':<58} |       time |   CPU time |")
    print(f"|{'-' * 60}|------------|------------|")
    cohort, _ = timed("load embeddings + CSVs", lambda: load_cohort(args.embeddings))
    ids = cohort.labelled_ids
    spec, params = Settings().spec, Settings().params
    five = repeated_folds(ids, cohort.labels(ids), 5, 1, 0)
    timed("5-fold CV, default config (first: + cell statistics)", lambda: cross_validate(cohort, spec, params, five))
    other = repeated_folds(ids, cohort.labels(ids), 5, 1, 1)
    timed("5-fold CV, default config (new folds)", lambda: cross_validate(cohort, spec, params, other))
    designs = [repeated_folds(ids, cohort.labels(ids), 5, 1, seed) for seed in range(2, 7)]
    timed_median("5-fold CV, default config (new folds, median of 5)",
                 [lambda folds=folds: cross_validate(cohort, spec, params, folds) for folds in designs])
    with tempfile.TemporaryDirectory() as tmp:
        def cv_and_save():
            comparison = compare(cohort, spec, params, CVDesign(5, 10, 0), keep_models=True)
            return save_cv(Path(tmp) / "cv", comparison, explain(comparison.full), Settings(), cohort, 0.0)

        directory, _ = timed("model.py cv: 10 x 5-fold CV of both models, results saved", cv_and_save)
        timed("model.py report from the saved results, every patient",
              lambda: build_report(load_cv(directory), cohort, Path(tmp) / "report", cohort.labelled_ids))
    folds = repeated_folds(ids, cohort.labels(ids), 5, args.repeats, 0)
    study = tuning.create_study("benchmark", optuna.storages.InMemoryStorage(), 0)
    timed(f"study: {args.trials} trials x {args.repeats} repeats x 5 folds",
          lambda: tuning.run_study(study, cohort, folds, args.trials))
    states = [t.state.name for t in study.trials]
    print(f"\n{len(ids)} patients; trials complete {states.count('COMPLETE')}, pruned {states.count('PRUNED')}; "
          f"best (optimistic) {study.best_value:.3f}")


if __name__ == "__main__":
    main()
