"""Patient-level models from the embeddings and clinical attributes: honest CV, fit, predict, report.

    model.py cv                  # 10 x 5-fold CV, images + clinical vs clinical only; saves <artifacts>/cv/
    model.py fit                 # train on every labelled patient; saves <artifacts>/model/
    model.py predict             # the testset patients (LABEL -1); writes <artifacts>/predictions.csv
    model.py report              # HTML + Markdown report from the saved CV; writes <artifacts>/report/

<artifacts> is the folder of the (first) embeddings file: artifacts/<dataset>/ by default, where extract.py
writes. The dataset's CSVs are found through the embeddings file, or given with --root.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..files import atomic_write_json
from ..invocation import command
from .catalog import COMMANDS, MODEL_COMMANDS
from .common import Parser, Run, cli_main, cohort_inputs, parse_with_config, resolve_data_options, start_run
from .decision_options import fitted_decision, write_card
from .evaluate import check_evaluate, command_evaluate
from .options import add_options
from .predict import check_predict, command_predict
from .saved_cv import design_of, load_stain_cv, run_cv, saved_or_run

if TYPE_CHECKING:  # imported late at run time: --help starts without LightGBM
    from ..model.evaluation import CVDesign
    from ..model.results import SavedCV

PROG = "model.py"
log = logging.getLogger("model")

SUBCOMMANDS = {  # model.py's subcommands: their one-line help and their description
    "cv": ("repeated stratified CV, full vs clinical-only",
           "Repeated stratified cross-validation over patients of the model with images\n"
           "and of the clinical-only model on the same folds; saves the results folder."),
    "fit": ("train on all labelled patients and save", "Train on every labelled patient and save the model."),
    "predict": ("predict the testset patients", "Predict the patients without a label (LABEL -1) with a saved model."),
    "report": ("HTML/Markdown report", "The report of the saved cross-validation (run first when there is none\n"
                                       "for these embeddings, settings and folds)."),
    "evaluate": ("judge a saved model on another labelled cohort",
                 "Score a saved model on every labelled patient of another cohort (its\n--embeddings): BA, AUC, "
                 "operating points, calibration, decision curve,\nwith intervals; writes a results folder and report."),
}


def build_parser(run: Run | None = None) -> Parser:
    run = run or Run()
    parser = Parser(prog=run.program(PROG), description=run.words(__doc__))
    commands = parser.add_subparsers(dest="command", required=True, metavar=f"{{{','.join(MODEL_COMMANDS)}}}")
    for name in MODEL_COMMANDS:
        summary, description = SUBCOMMANDS[name]
        add_options(commands.add_parser(name, help=summary, description=run.words(description)), *COMMANDS[name],
                    words=run.words)
    return parser


def parse_args(argv=None, run: Run | None = None):
    run = run or Run()
    args = parse_with_config(build_parser(run), argv, run, subcommands=MODEL_COMMANDS)
    paths = resolve_data_options(args, run)
    if args.command == "evaluate" and args.out_dir is None:
        args.out_dir = paths.home / "evaluation"
    defaults = {"cv_dir": paths.cv_dir, "model_dir": paths.model_dir, "out": paths.predictions,
                "submission": paths.submission, "out_dir": paths.report_dir}
    for name, value in defaults.items():
        if getattr(args, name, "absent") is None:
            setattr(args, name, value)
    return args


def format_cv_table(comparison) -> str:
    design = comparison.design
    width = len("images + clinical")
    lines = [
        f"{len(comparison.full.ids)} labelled patients ({comparison.n_tumoral} tumoral), {design.folds}-fold CV x "
        f"{design.repeats} repeats (seed {design.seed}); mean ± std over repeats",
        f"| {'model':<{width}} | balanced accuracy | ROC AUC       |",
        f"|{'-' * (width + 2)}|-------------------|---------------|",
    ]
    for name, result in (("images + clinical", comparison.full), ("clinical only", comparison.clinical)):
        summary = result.summary
        lines.append(f"| {name:<{width}} | {summary.balanced_accuracy!s:<17} | {summary.roc_auc!s:<13} |")
    return "\n".join(lines)


def check_cv(args, cohort, settings) -> None:
    from ..model.results import check_results_dir
    from ..model.saved_runs import check_results_root, results_dir

    check_results_root(args.cv_dir)
    check_results_dir(results_dir(args.cv_dir, settings, design_of(args)))


def command_cv(args, run: Run, cohort, settings, checked=None):
    from ..model.decision_results import format_decision_table, judged
    from ..model.saved_runs import results_dir

    saved = run_cv(args, run, cohort, settings, results_dir(args.cv_dir, settings, design_of(args)))
    print(format_cv_table(saved.comparison))
    if saved.decisions is not None:
        print(format_decision_table(judged(saved.decisions, saved.comparison, args.prevalence)))
    if settings.tuned:
        print(run.words(f"settings from {settings.source}: tuned on these patients, so this CV is optimistic; "
                        f"`{command('tune')} --nested` measures what tuning buys"))
    if args.json:
        document = saved.comparison.summary_dict()
        document["settings"] = settings.to_dict()
        document["embeddings"] = [{"name": s.name, "path": str(s.path), "model": s.provenance["model"],
                                   "weights_sha256": s.provenance["weights_sha256"]} for s in cohort.sets]
        atomic_write_json(args.json, document)
        log.info("wrote %s", args.json)


def check_fit(args, cohort, settings) -> None:
    from ..model.persistence import check_model_dir

    check_model_dir(args.model_dir)
    if not cohort.labelled_ids:
        raise InputError(f"{cohort.dataset_root}: no labelled patients (LABEL 0 or 1) in the trainset; nothing to train on")


def command_fit(args, run: Run, cohort, settings, checked=None):
    from ..drift.reference import fit_reference
    from ..model.classifier import FittedModel
    from ..model.fallback import remove_other_clinical_models, save_clinical_model
    from ..model.params import too_few_patients
    from ..model.persistence import save_model

    ids = cohort.labelled_ids
    training = {"n_patients": len(ids), "n_tumoral": int(cohort.labels(ids).sum()), "settings_source": settings.source,
                "dataset_root": str(cohort.dataset_root), "embeddings_path": [str(s.path) for s in cohort.sets]}
    model = FittedModel.fit(cohort, ids, settings.spec, settings.params, training)
    if not model.separates:
        reason = too_few_patients(len(ids), model.params) or "the features do not separate the classes"
        raise InputError(f"the model gives every training patient the same probability, so it cannot tell tumoral from "
                         f"reactive ({reason}); not saved, {args.model_dir} is unchanged")
    model.decision = fitted_decision(args, cohort, settings, ids)
    model.drift_reference = fit_reference(cohort, ids)
    for note in model.drift_reference.notes:
        log.warning("drift reference: %s", note)
    model.training["clinical_only"] = save_clinical_model(args.model_dir, cohort, ids, settings.spec, settings.params,
                                                          training)
    save_model(model, args.model_dir)
    remove_other_clinical_models(args.model_dir, model.training["clinical_only"])
    write_card(args, run, cohort, settings, model)
    print(f"saved model trained on {len(ids)} patients ({settings.source}) to {args.model_dir}")




@dataclass(frozen=True)
class ReportInputs:
    """What the report reads besides the cohort, checked before anything runs."""
    patients: list[str]
    design: CVDesign
    stained: SavedCV | None  # the CV of the stain-normalised embeddings, or None
    out_dir: Path


def check_report(args, cohort, settings) -> ReportInputs:
    from ..model.results import check_results_dir
    from ..model.saved_runs import check_results_root, default_settings, results_dir
    from ..report.build import prepare_out_dir, select_patients

    patients = select_patients(cohort, args.patients)
    design = design_of(args)
    stained = load_stain_cv(args.stain_cv, cohort, settings, design) if args.stain_cv else None
    out_dir = prepare_out_dir(args.out_dir)
    check_results_root(args.cv_dir)
    for each in (settings, default_settings(cohort)) if settings.tuned else (settings,):
        check_results_dir(results_dir(args.cv_dir, each, design))
    return ReportInputs(patients, design, stained, out_dir)


def command_report(args, run: Run, cohort, settings, checked: ReportInputs):
    from ..model.saved_runs import default_settings, find_nested
    from ..report.build import build_report
    from ..report.headline import Honesty

    saved = saved_or_run(args, run, cohort, settings, checked.design, "settings in use")
    honesty = None
    if settings.tuned:
        nested = find_nested(run.home, cohort)
        default = saved_or_run(args, run, cohort, default_settings(cohort), checked.design,
                               "the default settings, same folds")
        honesty = Honesty(settings.source, default, nested)
        if nested is None:
            print(run.words(f"report: settings tuned on these patients ({settings.source}): the headline is "
                            f"optimistic; `{command('tune')} --nested` measures what tuning buys"))
        else:
            print(f"report: headline from the nested cross-validation in {nested.path}")
    directory = build_report(saved, cohort, checked.out_dir, checked.patients, checked.stained, args.prevalence,
                             run.progress, honesty)
    print(f"report: {directory}")


def inputs_of(args, cohort) -> list[Path]:
    """Every file this run reads: no output may be one of them."""
    inputs = cohort_inputs(cohort)
    if getattr(args, "params", "auto") not in ("auto", "default"):
        inputs.append(Path(args.params))
    if args.command in ("predict", "evaluate") and Path(args.model_dir).is_dir():
        inputs += sorted(Path(args.model_dir).iterdir())
    if getattr(args, "stain_cv", None):
        inputs.append(Path(args.stain_cv))
    return inputs


FOLDER_OUTPUTS = ("--cv-dir", "--out-dir")  # replaced as a whole: nothing else may be written inside


def refuse_nested_outputs(outputs: dict) -> None:
    """No output inside (or equal to) a folder output: the folder is swapped in whole, so what was written inside
    it would be lost, or would block the swap, on this run or the next."""
    for folder_option in FOLDER_OUTPUTS:
        folder = outputs.get(folder_option)
        for option, output in outputs.items():
            if folder is None or output is None or option == folder_option:
                continue
            if Path(output).resolve().is_relative_to(Path(folder).resolve()):
                raise InputError(f"{option} {output}: inside {folder_option} {folder}, a folder that is replaced as a "
                                 "whole; choose a path outside it")


def outputs_of(args) -> dict:
    if args.command == "cv":
        return {"--json": args.json, "--cv-dir": args.cv_dir}
    if args.command == "fit":
        return {"--model-dir": args.model_dir}
    if args.command == "predict":
        if Path(args.out).resolve() == Path(args.submission).resolve():
            raise InputError(f"--out and --submission are the same file ({args.out}); give two paths")
        return {"--out": args.out, "--submission": args.submission}
    if args.command == "evaluate":
        return {"--out-dir": args.out_dir}
    return {"--out-dir": args.out_dir, "--cv-dir": args.cv_dir}


STEPS = {"cv": (check_cv, command_cv), "fit": (check_fit, command_fit), "report": (check_report, command_report)}


@cli_main
def main(argv, run: Run):
    args = parse_args(argv, run)
    from ..evidence import require_cells_to_train
    from ..files import refuse_inputs_as_outputs
    from ..model.cohort import load_cohort
    from ..model.measurements import settings_for
    from ..model.tuned_params import load_settings
    from ..output_kinds import require_own_outputs

    outputs = outputs_of(args)
    refuse_nested_outputs(outputs)
    # predict and evaluate fit nothing: the training views beside another cohort's embeddings are not read
    cohort = load_cohort([*args.embeddings, *args.measurements], args.root,
                         views=args.command not in ("predict", "evaluate"))
    refuse_inputs_as_outputs(outputs, inputs_of(args, cohort))
    require_own_outputs(outputs, args.command)
    # Every check runs before start_run, so a refused command leaves no run log behind.
    if args.command in ("predict", "evaluate"):
        check, step = (check_predict, command_predict) if args.command == "predict" else (check_evaluate, command_evaluate)
        checked = check(args, cohort)
        start_run(args, run, args.command)
        return step(args, run, cohort, checked) or 0
    settings = settings_for(cohort, load_settings(args.params, cohort))
    require_cells_to_train(cohort, args.max_without_cells)
    check, step = STEPS[args.command]
    checked = check(args, cohort, settings)
    start_run(args, run, args.command)
    log.info("settings: %s", settings.source)
    step(args, run, cohort, settings, checked)
    return 0
