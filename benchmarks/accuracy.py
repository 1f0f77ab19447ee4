#!/usr/bin/env python
"""Accuracy table on one dataset, every row on the same repeated folds (except the nested ones), overall and on
the hard subgroup (lymphocyte count <= 8 x 10^9/L, where the count cannot decide), each paired against the
default pipeline repeat by repeat:

  clinical only                   LightGBM on age, sex, lymphocyte count
  design card, literal            + mean/max/quartiles of every embedding dimension (thousands of columns)
  default pipeline                + statistics of the cross-fitted per-cell score (model.py's defaults)
  colour only                     clinical + a cell score on raw per-cell colours (--colour FILE): the stain shortcut
  colour only, stain-norm.        the same on colours measured with --stain (--stain-colour FILE): what is left of it
  stain-normalised default        the default on embeddings extracted with --stain (--stain-embeddings FILE)
  default + morphometry           + the median of each morphometric quantity (--morphometry FILE)
  stain-normalised + morphometry  both files made with --stain (--stain-embeddings, --stain-morphometry)
  default on <backbone>           the default on another embeddings file of the same images (--backbone FILE)
  default, both backbones         the default on the main file and that one together (a cell score each)
  tuned, nested CV                tune.py's search re-run inside every outer training fold, judged outside

    python benchmarks/accuracy.py --embeddings artifacts/embeddings.h5 [--repeats 20] [--nested-repeats 2 --trials 30]
        [--colour colour.h5] [--stain-colour colour-slide.h5] [--stain-embeddings embeddings-slide.h5]
        [--morphometry morphometry.h5] [--stain-morphometry morphometry-slide.h5] [--backbone dinobloom-s.h5 ...]

Balanced accuracy at p >= 0.5 and ROC AUC, mean ± std over repeats of stratified 5-fold CV. The hard-subgroup
columns read the out-of-fold predictions of the hard patients from models trained on everyone. "vs default"
is the per-repeat difference to the default pipeline on the same folds, mean ± std over repeats.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lymphocytosis.contract.provenance import stain_control
from lymphocytosis.errors import InputError
from lymphocytosis.files import atomic_write_json
from lymphocytosis.model.cohort import Cohort, load_cohort
from lymphocytosis.model.evaluation import cross_validate, repeated_folds
from lymphocytosis.model.feature_spec import FeatureSpec
from lymphocytosis.model.measurements import with_morphometry
from lymphocytosis.model.subgroups import hard_mask, paired
from lymphocytosis.model.tuned_params import Settings
from lymphocytosis.model.tuning import nested_cv

NAME_WIDTH = 30
HEADER = (f"| {'pipeline':<{NAME_WIDTH}} | balanced accuracy | ROC AUC       | hard: balanced acc. | hard: ROC AUC "
          "| vs default, all | vs default, hard | notes |")


@dataclass
class Row:
    name: str
    cohort: Cohort
    spec: FeatureSpec
    detail: str


def extra_cohort(path: Path, base: Cohort, embeddings: Path | None = None) -> Cohort:
    """The cohort of another file of the same dataset (optionally beside `embeddings`), checked to hold the
    same labelled patients, so its rows run on the very same folds."""
    cohort = load_cohort([embeddings, path] if embeddings else path, base.dataset_root)
    if cohort.fingerprint != base.fingerprint:
        raise InputError(f"{path}: other labelled patients than {base.primary.path}; rows must share their folds")
    return cohort


def build_rows(args, base: Cohort) -> list[Row]:
    spec, clinical = Settings().spec, Settings().spec.clinical_only()
    # The default first: every other row is paired against it.
    rows = [Row("default pipeline", base, spec, f"{len(spec.clinical)} + {len(spec.cell_score_stats)} columns"),
            Row("clinical only", base, clinical, "3 columns")]
    if not args.no_literal:
        rows.append(Row("design card, literal", base, replace(clinical, embedding_stats=("mean", "max", "q25", "q75")),
                        f"3 + 4 x {base.primary.dim} columns"))
    for name, path in (("colour only", args.colour), ("colour only, stain-norm.", args.stain_colour)):
        if path:
            colours = extra_cohort(path, base)
            rows.append(Row(name, colours, replace(clinical, measurement_score=True),
                            f"clinical + cell score on 12 raw colours (nucleus, cytoplasm, red cells, background); "
                            f"--stain {stain_of(colours)}"))
    if args.stain_embeddings:
        stained = extra_cohort(args.stain_embeddings, base)
        rows.append(Row("stain-normalised default", stained, spec, f"--stain {stain_of(stained)}"))
    if args.morphometry:
        measured = extra_cohort(args.morphometry, base, args.embeddings)
        rows.append(Row("default + morphometry", measured, with_morphometry(spec),
                        f"+ median of each of {measured.sets[-1].dim} morphometric quantities"))
    for path in args.backbone or []:
        alone = extra_cohort(path, base)
        label = Path(path).stem if alone.primary.name == base.primary.name else alone.primary.name
        rows.append(Row(f"default on {label}"[:NAME_WIDTH], alone, spec,
                        f"{alone.primary.name}, {alone.primary.provenance['preprocessing']}; dim {alone.primary.dim}"))
        both = extra_cohort(path, base, args.embeddings)
        rows.append(Row(f"default, main + {label}"[:NAME_WIDTH], both, spec,
                        f"{' and '.join(s.name for s in both.sets)}: a cell score each"))
    if args.stain_embeddings and args.stain_morphometry:
        both = extra_cohort(args.stain_morphometry, base, args.stain_embeddings)
        rows.append(Row("stain-normalised + morphometry", both, with_morphometry(spec),
                        f"both extracted with --stain {stain_of(both)}"))
    return rows


def stain_of(cohort: Cohort) -> str:
    """The stain control of a cohort's last file (measurement files record it in their settings too)."""
    return stain_control(cohort.sets[-1].provenance)


def table_row(name: str, summary, hard, detail: str, versus=None, versus_hard=None) -> str:
    diff = [f"{v.difference.balanced_accuracy.mean:+.3f} ± {v.difference.balanced_accuracy.std:.3f}" if v else ""
            for v in (versus, versus_hard)]
    hard_cells = [str(hard.balanced_accuracy), str(hard.roc_auc)] if hard else ["", ""]
    return (f"| {name:<{NAME_WIDTH}} | {summary.balanced_accuracy!s:<17} | {summary.roc_auc!s:<13} | {hard_cells[0]:<19} "
            f"| {hard_cells[1]:<13} | {diff[0]:<15} | {diff[1]:<16} | {detail} |")


def run_rows(rows: list[Row], folds, params) -> dict:
    """Cross-validate each row on `folds`; print and return its metrics, overall and hard, each paired with the
    first row's (the default pipeline)."""
    results, document = {}, {}
    for row in rows:
        started = time.perf_counter()
        results[row.name] = cross_validate(row.cohort, row.spec, params, folds)
        default = results[rows[0].name]
        mask = hard_mask(row.cohort, results[row.name].ids)
        overall, hard = paired(results[row.name], default), paired(results[row.name], default, mask)
        versus = (overall, hard) if row is not rows[0] else (None, None)
        print(table_row(row.name, overall.model, hard.model, f"{row.detail}; {time.perf_counter() - started:.0f} s", *versus),
              flush=True)
        document[row.name] = {"all": overall.to_dict(), "hard": hard.to_dict(), "n_hard": int(mask.sum()),
                              "n_hard_tumoral": int(results[row.name].labels[mask].sum())}
    return document


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("artifacts/embeddings.h5"))
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--colour", type=Path, default=None, help="extract.py --measure colour file: the colour-only row")
    parser.add_argument("--stain-colour", type=Path, default=None, help="the same, measured with --stain")
    parser.add_argument("--stain-embeddings", type=Path, default=None, help="embeddings extracted with --stain")
    parser.add_argument("--morphometry", type=Path, default=None, help="extract.py --measure morphometry file")
    parser.add_argument("--stain-morphometry", type=Path, default=None,
                        help="morphometry measured with --stain, for a row beside --stain-embeddings")
    parser.add_argument("--backbone", type=Path, action="append", default=None,
                        help="another embeddings file of the same images (another network or input size): a row on "
                             "it alone and one on both files together; repeatable")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=30, help="Optuna trials per outer fold of the nested CV")
    parser.add_argument("--nested-repeats", type=int, default=2, help="outer repeats of the nested CV (0: skip the row)")
    parser.add_argument("--no-literal", action="store_true",
                        help="skip the design card's literal row (thousands of columns: the slowest row by far)")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main():
    logging.basicConfig(level=logging.WARNING)
    args = parse_args()
    cohort = load_cohort(args.embeddings, args.root)
    ids = cohort.labelled_ids
    folds = repeated_folds(ids, cohort.labels(ids), args.folds, args.repeats, args.seed)
    provenance, hard = cohort.primary.provenance, hard_mask(cohort, ids)
    print(f"{args.embeddings}: {len(ids)} labelled patients ({int(cohort.labels(ids).sum())} tumoral); "
          f"model {provenance['model']}, preprocessing {provenance['preprocessing']}, tta {provenance['tta']}")
    print(f"hard subgroup (lymphocyte count <= 8): {int(hard.sum())} patients ({int(cohort.labels(ids)[hard].sum())} tumoral)")
    print(f"{args.folds}-fold CV x {args.repeats} repeats (seed {args.seed}); mean ± std over repeats\n")
    print(HEADER)
    print("".join(ch if ch == "|" else "-" for ch in HEADER))
    results = run_rows(build_rows(args, cohort), folds, Settings().params)
    if args.nested_repeats:
        started = time.perf_counter()
        nested = nested_cv(cohort, args.trials, args.folds, args.nested_repeats, inner_folds=5, inner_repeats=1,
                           seed=args.seed)
        results["tuned, nested CV"] = nested.to_dict()
        print(table_row("tuned, nested CV", nested.tuned, None,
                        f"{args.trials} trials per outer fold, {args.nested_repeats} outer repeats; inner best values "
                        f"averaged {nested.mean_inner_best_value:.3f}; {time.perf_counter() - started:.0f} s"))
        print(table_row("default, same outer folds", nested.default, None, "for comparison with the nested row"))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
