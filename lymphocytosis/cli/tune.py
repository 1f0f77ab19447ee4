"""`tune.py`: tune the bag features and LightGBM with Optuna; resumable, and judged by nested CV.

    python tune.py --embeddings artifacts/embeddings.h5 --trials 100        # run / resume the study
    python tune.py --embeddings artifacts/embeddings.h5 --nested --trials 30 # what tuning really buys

The study lives in an RDB (default: SQLite under artifacts/, open it with `optuna-dashboard URL`); the same
command continues it. Several workers, on one machine or many, can share one study: start the same command
with a PostgreSQL URL (postgresql://user:password@host/db), or a journal file on a shared filesystem
(journal:///shared/study.log); --trials is the study's total, all workers together.
The best settings are written to artifacts/best_params.json, where `model.py --params auto` finds them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..defaults import DEFAULT_BEST_PARAMS, DEFAULT_EMBEDDINGS, DEFAULT_HEARTBEAT_S, DEFAULT_STORAGE
from ..errors import InputError
from ..files import atomic_write_json
from .common import Parser, cli_main, int_in, positive_float

PROG = "tune.py"


log = logging.getLogger("tune")


def parse_args(argv=None):
    parser = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, action="append", default=None,
                        help=f"HDF5 from extract.py; repeat it to combine backbones (default: {DEFAULT_EMBEDDINGS})")
    parser.add_argument("--root", type=Path, default=None, help="dataset root (default: recorded in the embeddings)")
    parser.add_argument("--trials", type=int_in(1, 1_000_000), default=100,
                        help="total finished trials wanted in the study, all workers together (default: 100)")
    parser.add_argument("--timeout", type=positive_float, default=None, help="stop starting new trials after this many seconds")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"SQLAlchemy URL, or journal:///path/study.log (default: {DEFAULT_STORAGE})")
    parser.add_argument("--heartbeat", type=int_in(1, 86_400), default=DEFAULT_HEARTBEAT_S, metavar="SECONDS",
                        help="RDB storages: a running trial's heartbeat period; a trial silent for twice as long "
                             f"(its worker was killed) is marked failed by the next worker (default: {DEFAULT_HEARTBEAT_S})")
    parser.add_argument("--study-name", default=None, help="default: derived from the embeddings' provenance and CV design")
    parser.add_argument("--folds", type=int_in(2, 100), default=5)
    parser.add_argument("--repeats", type=int_in(1, 1000), default=2, help="CV repeats per trial (default: 2)")
    parser.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0)
    parser.add_argument("--best-params", type=Path, default=DEFAULT_BEST_PARAMS,
                        help=f"where model.py finds them (default: {DEFAULT_BEST_PARAMS})")
    parser.add_argument("--nested", action="store_true", help="outer CV around the whole tuning (reports, saves nothing)")
    parser.add_argument("--outer-folds", type=int_in(2, 100), default=5)
    parser.add_argument("--outer-repeats", type=int_in(1, 1000), default=1)
    parser.add_argument("--json", type=Path, default=None, help="with --nested: write the results here")
    args = parser.parse_args(argv)
    args.embeddings = args.embeddings or [DEFAULT_EMBEDDINGS]
    return args


def route_optuna_logging() -> None:
    """Optuna's own messages through our handler and format (one log stream, one place that decides)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


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
    from ..model.study_storage import masked, open_storage
    from ..model.tuned_params import save_settings

    ids = cohort.labelled_ids
    folds = repeated_folds(ids, cohort.labels(ids), args.folds, args.repeats, args.seed)
    name = args.study_name or tuning.study_name(cohort, args.folds, args.repeats, args.seed)
    route_optuna_logging()
    study = tuning.create_study(name, open_storage(args.storage, args.heartbeat), args.seed)
    shown = masked(args.storage)
    log.info("study %s in %s: %d finished trials so far", name, shown, tuning.finished_trials(study))

    def save_best(study, _trial=None):
        try:
            best = study.best_trial
        except ValueError:
            return
        save_settings(args.best_params, tuning.settings_from_trial(best), cohort,
                      {"study": name, "storage": shown, "trial": best.number,
                       "cv_value_optimistic": best.value, "note": "best_value is optimistic; see tune.py --nested"})

    try:
        tuning.run_study(study, cohort, folds, args.trials, args.timeout, callbacks=[tuning.log_progress, save_best])
    finally:
        save_best(study)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise InputError(f"study {name}: no complete trial yet (raise --trials); nothing to save")
    print(f"study {name}: {tuning.finished_trials(study)} trials finished ({len(study.trials)} in all); best CV balanced "
          f"accuracy {study.best_value:.4f} (trial {study.best_trial.number}; optimistic -- judge tuning with --nested); "
          f"settings in {args.best_params}")


@cli_main
def main(argv=None):
    args = parse_args(argv)
    from ..extract.layout import split_csv_paths
    from ..files import refuse_inputs_as_outputs
    from ..model.cohort import load_cohort

    cohort = load_cohort(args.embeddings, args.root)
    inputs = [s.path for s in cohort.sets] + list(split_csv_paths(cohort.dataset_root).values())
    refuse_inputs_as_outputs({"--json": args.json, "--best-params": None if args.nested else args.best_params}, inputs)
    (command_nested if args.nested else command_study)(args, cohort)
    return 0
