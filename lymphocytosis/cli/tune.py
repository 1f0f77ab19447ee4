"""`tune.py`: tune the bag features and LightGBM with Optuna; resumable, and judged by nested CV.

    python tune.py --embeddings artifacts/embeddings.h5 --trials 100        # run / resume the study
    python tune.py --embeddings artifacts/embeddings.h5 --nested --trials 30 # what tuning really buys

The study lives in an RDB (default: SQLite under artifacts/, open it with `optuna-dashboard URL`); the same
command continues it, and any SQLAlchemy URL (e.g. PostgreSQL) lets several machines share one study.
The best settings are written to artifacts/best_params.json, where `model.py --params auto` finds them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..defaults import DEFAULT_BEST_PARAMS, DEFAULT_EMBEDDINGS, DEFAULT_STORAGE
from ..errors import InputError
from ..files import atomic_write_json
from .common import cli_main

log = logging.getLogger("tune")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=DEFAULT_EMBEDDINGS)
    parser.add_argument("--root", type=Path, default=None, help="dataset root (default: recorded in the embeddings)")
    parser.add_argument("--measurements", type=Path, nargs="+", default=[],
                        help="measurement files of the same images (extract.py --measure morphometry): the search "
                             "then also chooses how to use them")
    parser.add_argument("--trials", type=int, default=100, help="total finished trials wanted in the study (default: 100)")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"SQLAlchemy URL (default: {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", default=None, help="default: derived from the embeddings' provenance and CV design")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="CV repeats per trial (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--best-params", type=Path, default=DEFAULT_BEST_PARAMS,
                        help=f"where model.py finds them (default: {DEFAULT_BEST_PARAMS})")
    parser.add_argument("--nested", action="store_true", help="outer CV around the whole tuning (reports, saves nothing)")
    parser.add_argument("--outer-folds", type=int, default=5)
    parser.add_argument("--outer-repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="with --nested: write the results here")
    return parser.parse_args(argv)


def storage_for(url: str):
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises many types for bad URLs and unreachable servers
        raise InputError(f"--storage {url}: cannot open ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def command_nested(args, cohort) -> None:
    from ..model.tuning import nested_cv

    result = nested_cv(cohort, args.trials, args.outer_folds, args.outer_repeats, args.folds, args.repeats, args.seed)
    for name, summary in (("tuned", result.tuned), ("default", result.default)):
        print(f"{name:8s} balanced accuracy {summary.balanced_accuracy}   ROC AUC {summary.roc_auc}")
    print(f"(inner-CV best values averaged {result.mean_inner_best_value:.3f}: the optimism that nested CV removes)")
    if args.json:
        atomic_write_json(args.json, result.to_dict())


def command_study(args, cohort) -> None:
    import optuna

    from ..model import tuning
    from ..model.evaluation import repeated_folds
    from ..model.tuned_params import save_settings

    ids = cohort.labelled_ids
    folds = repeated_folds(ids, cohort.labels(ids), args.folds, args.repeats, args.seed)
    name = args.study_name or tuning.study_name(cohort, args.folds, args.repeats, args.seed)
    study = tuning.create_study(name, storage_for(args.storage), args.seed)
    log.info("study %s in %s: %d trials so far", name, args.storage, len(study.trials))

    def save_best(study, _trial=None):
        try:
            best = study.best_trial
        except ValueError:
            return
        save_settings(args.best_params, tuning.settings_from_trial(best), cohort,
                      {"study": name, "storage": args.storage, "trial": best.number,
                       "cv_value_optimistic": best.value, "note": "best_value is optimistic; see tune.py --nested"})

    try:
        tuning.run_study(study, cohort, folds, args.trials, args.timeout, callbacks=[tuning.log_progress, save_best])
    finally:
        save_best(study)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise InputError(f"study {name}: no complete trial yet (raise --trials); nothing to save")
    print(f"study {name}: {len(study.trials)} trials; best CV balanced accuracy {study.best_value:.4f} (trial "
          f"{study.best_trial.number}; optimistic -- judge tuning with --nested); settings in {args.best_params}")


@cli_main
def main(argv=None):
    args = parse_args(argv)
    from ..model.cohort import load_cohort

    cohort = load_cohort([args.embeddings, *args.measurements], args.root)
    (command_nested if args.nested else command_study)(args, cohort)
    return 0
