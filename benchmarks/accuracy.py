#!/usr/bin/env python
"""Accuracy table on one dataset, all rows on the same repeated folds where they can be:

  clinical only            LightGBM on age, sex, lymphocyte count
  design card, literal     + mean/max/quartiles of every embedding dimension (thousands of columns)
  default pipeline         + statistics of the cross-fitted per-cell score (model.py's defaults)
  tuned, nested CV         tune.py's search re-run inside every outer training fold, judged outside

    python benchmarks/accuracy.py --embeddings artifacts/embeddings.h5 [--repeats 10] [--nested-repeats 2 --trials 30]

Balanced accuracy at p >= 0.5 and ROC AUC, mean ± std over repeats of stratified 5-fold CV.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lymphocytosis.files import atomic_write_json
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import cross_validate, repeated_folds
from lymphocytosis.model.tuned_params import Settings
from lymphocytosis.model.tuning import nested_cv


def row(name, summary, detail):
    return f"| {name:<24} | {summary.balanced_accuracy!s:<17} | {summary.roc_auc!s:<13} | {detail} |"


def main():
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("artifacts/embeddings.h5"))
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=30, help="Optuna trials per outer fold of the nested CV")
    parser.add_argument("--nested-repeats", type=int, default=2, help="outer repeats of the nested CV (0: skip the row)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cohort = load_cohort(args.embeddings, args.root)
    ids = cohort.labelled_ids
    folds = repeated_folds(ids, cohort.labels(ids), args.folds, args.repeats, args.seed)
    spec, params = Settings().spec, Settings().params
    provenance = cohort.primary.provenance
    rows = {
        "clinical only": (spec.clinical_only(), "3 columns"),
        "design card, literal": (replace(spec.clinical_only(), embedding_stats=("mean", "max", "q25", "q75")),
                                 f"3 + 4 x {cohort.primary.dim} columns"),
        "default pipeline": (spec, f"{len(spec.clinical)} + {len(spec.cell_score_stats)} columns"),
    }
    print(f"{args.embeddings}: {len(ids)} labelled patients ({int(cohort.labels(ids).sum())} tumoral); "
          f"model {provenance['model']}, preprocessing {provenance['preprocessing']}, tta {provenance['tta']}")
    print(f"{args.folds}-fold CV x {args.repeats} repeats (seed {args.seed}); mean ± std over repeats\n")
    print("| pipeline                 | balanced accuracy | ROC AUC       | notes |")
    print("|--------------------------|-------------------|---------------|-------|")
    results = {}
    for name, (row_spec, detail) in rows.items():
        started = time.perf_counter()
        summary = cross_validate(cohort, row_spec, params, folds).summary
        results[name] = summary.to_dict()
        print(row(name, summary, f"{detail}; {time.perf_counter() - started:.0f} s"), flush=True)
    if args.nested_repeats:
        started = time.perf_counter()
        nested = nested_cv(cohort, args.trials, args.folds, args.nested_repeats, inner_folds=5, inner_repeats=1,
                           seed=args.seed)
        results["tuned, nested CV"] = nested.to_dict()
        print(row("tuned, nested CV", nested.tuned,
                  f"{args.trials} trials per outer fold, {args.nested_repeats} outer repeats; inner best values averaged "
                  f"{nested.mean_inner_best_value:.3f}; {time.perf_counter() - started:.0f} s"))
        print(row("default, same outer folds", nested.default, "for comparison with the nested row"))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
