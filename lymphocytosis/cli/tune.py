"""Search the model's settings (bag features, LightGBM) with Optuna; resumable; judged by nested CV.

    tune.py --trials 100              # run or resume the study; best settings to <artifacts>/best_params.json
    tune.py --nested --trials 30      # what tuning really buys, on patients the search never saw; saved to
                                      # <artifacts>/nested/, where the report finds it

<artifacts> is the folder of the (first) embeddings file: artifacts/<dataset>/ by default, where extract.py
writes. The study lives in a database: by default SQLite there (<artifacts>/tune.sqlite3; browse it with
`optuna-dashboard sqlite:///...`); the same command continues it. A study is tied to the patients, embeddings
and CV design it was made on: --study-name of a study made on others is refused. Several workers, on one
machine or many, share one study when started with the same PostgreSQL URL (postgresql://user@host/db) or
journal file on a shared filesystem (journal:///shared/study.log): --trials is the study's total, all
workers together.
`model.py --params auto` (the default) uses the best settings saved beside the embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_json
from ..passwords import masked, remember
from .catalog import COMMANDS
from .common import (
    Parser,
    Run,
    changed_options,
    cli_main,
    cohort_inputs,
    parse_with_config,
    resolve_data_options,
    route_optuna_logging,
    start_run,
)
from .options import add_options

PROG = "tune.py"
log = logging.getLogger("tune")


def build_parser(run: Run | None = None) -> Parser:
    run = run or Run()
    parser = Parser(prog=run.program(PROG, "tune"), description=run.words(__doc__))
    return add_options(parser, *COMMANDS["tune"], words=run.words)


NESTED_ONLY = ("json", "outer_folds", "outer_repeats")  # options that mean something with --nested only


def parse_args(argv=None, run: Run | None = None):
    run = run or Run()
    parser = build_parser(run)
    args = parse_with_config(parser, argv, run, "tune")
    paths = resolve_data_options(args, run)
    args.storage = args.storage or paths.tune_storage
    remember(args.storage)  # its password is masked wherever it would be shown
    args.best_params = args.best_params or paths.best_params
    given = changed_options(parser, args, NESTED_ONLY)
    if given and not args.nested:
        raise InputError(f"{', '.join(given)}: options of --nested, which is not given")
    if args.nested and args.json is None:  # where `model.py report` finds it: the honest headline of tuned settings
        from ..model.saved_runs import nested_path

        args.json = nested_path(paths.home, args.outer_folds, args.outer_repeats, args.folds, args.repeats, args.trials,
                                args.seed)
    return args


def check_outputs(args, cohort) -> None:
    """No output may be an input (embeddings, measurements, CSVs), the study's file or a file tune.py did not
    write (--best-params replaces only a best-settings file of its own)."""
    from ..files import refuse_inputs_as_outputs, same_file
    from ..model.study_storage import storage_file
    from ..model.tuned_params import is_best_params_file

    inputs = cohort_inputs(cohort)
    if args.nested:
        refuse_inputs_as_outputs({"--json": args.json}, inputs)
        return
    database = storage_file(args.storage)
    refuse_inputs_as_outputs({"--best-params": args.best_params, "--storage": database}, inputs)
    if database is not None and same_file(database, args.best_params):
        raise InputError(f"--best-params {args.best_params}: is the study's storage ({masked(args.storage)}); "
                         "choose another path")
    if Path(args.best_params).exists() and not is_best_params_file(args.best_params):
        raise InputError(f"--best-params {args.best_params}: exists and is not a best-settings file written by tune.py; "
                         "refusing to replace it (choose another --best-params)")


def command_nested(args, run: Run, cohort) -> None:
    from ..model.tuning import nested_cv

    start_run(args, run, "tune")
    result = nested_cv(cohort, args.trials, args.outer_folds, args.outer_repeats, args.folds, args.repeats, args.seed,
                       run.progress)
    for name, summary in (("tuned", result.tuned), ("default", result.default)):
        print(f"{name:8s} balanced accuracy {summary.balanced_accuracy}   ROC AUC {summary.roc_auc}")
    print(f"(inner-CV best values averaged {result.mean_inner_best_value:.3f}: the optimism that nested CV removes)")
    from ..model.saved_runs import nested_document

    atomic_write_json(args.json, nested_document(result.to_dict(), cohort))
    print(f"nested estimate saved to {args.json} (the report's headline for settings tuned on these patients)")


def open_study(args, cohort):
    """The study of `--study-name` (default: named after the data and CV design), created or resumed; one made
    on other patients, embeddings or CV design is refused."""
    from ..model import tuning
    from ..model.study_storage import open_storage

    default_name = tuning.study_name(cohort, args.folds, args.repeats, args.seed)
    name = args.study_name or default_name
    record = tuning.study_record(cohort, args.folds, args.repeats, args.seed)
    route_optuna_logging()
    study = tuning.create_study(name, open_storage(args.storage, args.heartbeat), args.seed)
    tuning.claim_study(study, record, adopt_unrecorded=name == default_name, where=masked(args.storage))
    return study


def command_study(args, run: Run, cohort) -> None:
    import optuna

    from ..model import tuning
    from ..model.evaluation import repeated_folds
    from ..model.study_storage import storage_failure
    from ..model.tuned_params import save_settings

    ids = cohort.labelled_ids
    folds = repeated_folds(ids, cohort.labels(ids), args.folds, args.repeats, args.seed)
    study = open_study(args, cohort)
    name, shown = study.study_name, masked(args.storage)
    start_run(args, run, "tune")
    finished = tuning.finished_trials(study)
    log.info("study %s in %s: %d finished trials so far", name, shown, finished)
    if finished >= args.trials:
        print(f"study {name} already has {finished} finished trials, so --trials {args.trials} runs none: --trials is "
              f"the study's total (earlier runs and all workers together), not a number to add; ask for --trials "
              f"{finished + args.trials} to run {args.trials} more")

    def save_best(study, _trial=None):
        try:
            best = study.best_trial
        except ValueError:
            return
        except Exception as exc:  # the database went away: the file keeps what it holds
            if storage_failure(exc, args.storage, args.best_params) is None:
                raise
            log.warning("cannot read the best trial (the database failed); %s left as it was", args.best_params)
            return
        save_settings(args.best_params, tuning.settings_from_trial(best), cohort,
                      {"study": name, "storage": shown, "trial": best.number,
                       "cv_value_optimistic": best.value, "note": "best_value is optimistic; see tune.py --nested"})

    quiet_storage_threads(args.storage)
    try:
        tuning.run_study(study, cohort, folds, args.trials, args.timeout, callbacks=[tuning.log_progress, save_best],
                         progress=run.progress)
    except Exception as exc:
        failure = storage_failure(exc, args.storage, args.best_params)
        if failure is None:
            raise
        log.debug("database failure", exc_info=True)
        raise failure from None
    finally:
        save_best(study)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise InputError(f"study {name}: no complete trial yet (raise --trials); nothing to save")
    print(f"study {name}: {tuning.finished_trials(study)} trials finished ({len(study.trials)} in all); best CV balanced "
          f"accuracy {study.best_value:.4f} (trial {study.best_trial.number}; optimistic -- judge tuning with --nested); "
          f"settings in {args.best_params}")


def quiet_storage_threads(url: str) -> None:
    """Optuna's heartbeat thread hits a database that went away before the trial does: its traceback would
    scroll by before the one-line error; logged at debug level instead (other threads' errors as before)."""
    import threading

    from ..model.study_storage import is_storage_failure

    previous = threading.excepthook
    if getattr(previous, "quiet_storage", False):
        return

    def hook(info):
        if info.exc_value is not None and is_storage_failure(info.exc_value):
            log.debug("database failure in thread %s: %s", getattr(info.thread, "name", "?"),
                      masked(str(info.exc_value).splitlines()[0] if str(info.exc_value) else "", url))
            return
        previous(info)

    hook.quiet_storage = True
    threading.excepthook = hook


@cli_main
def main(argv, run: Run):
    """Options, inputs and outputs are all checked (and the study opened) before the run's log starts."""
    args = parse_args(argv, run)
    from ..model.cohort import load_cohort

    cohort = load_cohort([*args.embeddings, *args.measurements], args.root)
    check_outputs(args, cohort)
    (command_nested if args.nested else command_study)(args, run, cohort)
    return 0
