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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..evidence import DEFAULT_MAX_WITHOUT_CELLS, share
from ..files import atomic_write_json
from .common import (
    Parser,
    add_data_options,
    add_run_options,
    cli_main,
    cohort_inputs,
    int_in,
    parse_with_config,
    program,
    resolve_data_options,
    start_run,
)

if TYPE_CHECKING:  # imported late at run time: --help starts without LightGBM
    from ..model.classifier import FittedModel

PROG = "model.py"
log = logging.getLogger("model")


def shared_options() -> dict[str, Parser]:
    data = Parser(add_help=False)
    add_data_options(data, "its features join the model (with the defaults: each quantity's per-patient median)")
    add_run_options(data)
    tuned = Parser(add_help=False)
    tuned.add_argument("--params", default="auto",
                       help="'auto' (tune.py's best for these embeddings and patients, if saved, else the defaults), "
                            "'default', or the path of a parameters file")
    cv = Parser(add_help=False)
    cv.add_argument("--folds", type=int_in(2, 100), default=5, help="folds of the stratified CV over patients")
    cv.add_argument("--repeats", type=int_in(1, 1000), default=10, help="repeats of the CV, each with other folds")
    cv.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of the folds (same seed, same result)")
    cv.add_argument("--cv-dir", type=Path, default=None, help="saved CV results; default: <artifacts>/cv")
    evidence = Parser(add_help=False)
    evidence.add_argument("--max-without-cells", type=share, default=DEFAULT_MAX_WITHOUT_CELLS,
                          help="largest share of labelled patients without a readable cell image that cv and fit "
                               "train on (more is refused, naming them)")
    return {"data": data, "tuned": tuned, "cv": cv, "evidence": evidence}


def build_parser() -> Parser:
    parser = Parser(prog=program(PROG), description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{cv,fit,predict,report}")
    shared = shared_options()
    data, tuned, cv_options, evidence = shared["data"], shared["tuned"], shared["cv"], shared["evidence"]
    cv = commands.add_parser("cv", parents=[data, tuned, cv_options, evidence],
                             help="repeated stratified CV, full vs clinical-only",
                             description="Repeated stratified cross-validation over patients of the model with images\n"
                                         "and of the clinical-only model on the same folds; saves the results folder.")
    cv.add_argument("--json", type=Path, default=None, help="also write the headline results here; default: not written")
    fit = commands.add_parser("fit", parents=[data, tuned, evidence], help="train on all labelled patients and save",
                              description="Train on every labelled patient and save the model.")
    fit.add_argument("--model-dir", type=Path, default=None, help="where to save it; default: <artifacts>/model")
    predict = commands.add_parser("predict", parents=[data], help="predict the testset patients",
                                  description="Predict the patients without a label (LABEL -1) with a saved model.")
    predict.add_argument("--model-dir", type=Path, default=None, help="the saved model; default: <artifacts>/model")
    predict.add_argument("--out", type=Path, default=None,
                         help="ID,LABEL,PROBABILITY per patient; default: <artifacts>/predictions.csv")
    predict.add_argument("--submission", type=Path, default=None,
                         help="the challenge's Id,Predicted file; default: <artifacts>/submission.csv")
    predict.add_argument("--all", action="store_true", help="predict every patient, labelled ones included")
    predict.add_argument("--clinical-only-fallback", action="store_true",
                         help="predict patients without a readable cell image with the clinical-only model saved by "
                              "fit, marked 'clinical only' in the EVIDENCE column; default: refuse them")
    report = commands.add_parser("report", parents=[data, tuned, cv_options, evidence], help="HTML/Markdown report",
                                 description="The report of the saved cross-validation (run first when there is none\n"
                                             "for these embeddings, settings and folds).")
    report.add_argument("--out-dir", type=Path, default=None, help="default: <artifacts>/report")
    report.add_argument("--patients", default="all", help="'all', 'none' or comma-separated IDs for per-patient pages")
    report.add_argument("--stain-cv", type=Path, default=None,
                        help="saved CV (model.py cv --cv-dir) of the same settings on embeddings extracted with --stain: "
                             "the report then says how much of the image signal survives stain normalisation; default: none")
    return parser


def parse_args(argv=None):
    args = parse_with_config(build_parser(), argv)
    paths = resolve_data_options(args)
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


def warn_if_cannot_separate(comparison) -> None:
    """A fold model that gives every patient the same probability decides nothing; say so, and why if known."""
    from ..model.params import too_few_patients

    stuck = [f for f in comparison.full.folds if f.model is not None and not f.model.separates]
    if stuck:
        reason = too_few_patients(len(stuck[0].fold.train_ids), stuck[0].model.params)
        log.warning("in %d of %d folds the model gave every patient the same probability: it cannot separate the "
                    "classes there%s", len(stuck), len(comparison.full.folds), f" ({reason})" if reason else "")


def run_cv(args, cohort, settings):
    """Cross-validate, save the results folder (models and explanations kept), and return the saved results."""
    from ..model.evaluation import CVDesign, compare
    from ..model.explanations import explain
    from ..model.results import load_cv, save_cv

    started = time.perf_counter()
    comparison = compare(cohort, settings.spec, settings.params, CVDesign(args.folds, args.repeats, args.seed),
                         keep_models=True)
    warn_if_cannot_separate(comparison)
    directory = save_cv(args.cv_dir, comparison, explain(comparison.full), settings, cohort,
                        time.perf_counter() - started)
    log.info("wrote cross-validation results to %s", directory)
    return load_cv(directory)


def check_cv(args, cohort, settings) -> None:
    from ..model.results import check_results_dir

    check_results_dir(args.cv_dir)


def command_cv(args, cohort, settings, checked=None):
    saved = run_cv(args, cohort, settings)
    print(format_cv_table(saved.comparison))
    if settings.tuned:
        print(f"settings from {settings.source}: tuned on these patients, so this CV is optimistic; "
              "`python tune.py --nested` measures what tuning buys")
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


def command_fit(args, cohort, settings, checked=None):
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
    model.training["clinical_only"] = save_clinical_model(args.model_dir, cohort, ids, settings.spec, settings.params,
                                                          training)
    save_model(model, args.model_dir)
    remove_other_clinical_models(args.model_dir, model.training["clinical_only"])
    print(f"saved model trained on {len(ids)} patients ({settings.source}) to {args.model_dir}")


@dataclass(frozen=True)
class PredictInputs:
    """The saved model, checked against the embeddings, and the patients to predict."""
    model: FittedModel
    ids: list[str]
    clinical: FittedModel | None = None  # the clinical-only model, with --clinical-only-fallback
    fallback_ids: tuple[str, ...] = ()  # patients without cells, predicted by `clinical`


def check_predict(args, cohort) -> PredictInputs:
    from ..contract.provenance import require_same_sets
    from ..evidence import refuse_without_cells, without_cells
    from ..model.fallback import load_clinical_model
    from ..model.persistence import load_model

    model = load_model(args.model_dir)
    require_same_sets(model.provenance, cohort.provenance,
                      f"{cohort.primary.path}: embeddings of another provenance than the model was trained on",
                      "re-extract with the model's settings (model's first)")
    ids = cohort.ids if args.all else cohort.unlabelled_ids
    if not ids:
        raise InputError(f"{cohort.dataset_root}: no unlabelled patients (LABEL -1) to predict; use --all for every patient")
    empty = without_cells(cohort, ids)
    if not args.clinical_only_fallback:
        refuse_without_cells(empty)
        return PredictInputs(model, ids)
    clinical = load_clinical_model(args.model_dir, model) if empty else None
    return PredictInputs(model, ids, clinical, tuple(p.patient_id for p in empty))


def command_predict(args, cohort, checked: PredictInputs):
    import numpy as np
    import pandas as pd

    from ..files import atomic_output
    from ..model.fallback import predict_with_evidence

    model, ids = checked.model, checked.ids
    prediction = predict_with_evidence(model, checked.clinical, cohort, ids, list(checked.fallback_ids))
    if len(ids) > 1 and np.ptp(prediction.probabilities) == 0:
        log.warning("every patient got the same probability (%.4f): the model does not separate these patients",
                    prediction.probabilities[0])
    out = pd.DataFrame({"ID": ids, "LABEL": prediction.labels, "PROBABILITY": prediction.probabilities.round(6),
                        "EVIDENCE": prediction.evidence})
    submission = out[["ID", "LABEL"]].rename(columns={"ID": "Id", "LABEL": "Predicted"})
    for path, frame in ((args.out, out), (args.submission, submission)):
        with atomic_output(path) as tmp:
            frame.to_csv(tmp, index=False)
    if checked.fallback_ids:
        log.warning("%d patient(s) without a readable cell image predicted from the clinical attributes alone "
                    "(EVIDENCE 'clinical only'): %s", len(checked.fallback_ids), ", ".join(checked.fallback_ids))
    print(f"predicted {len(ids)} patients ({int(prediction.labels.sum())} tumoral): {args.out}, submission {args.submission}")


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads besides the cohort, checked before anything runs."""
    patients: list[str]
    design: object  # CVDesign
    stained: object | None  # SavedCV of the stain-normalised embeddings, or None
    out_dir: Path


def check_report(args, cohort, settings) -> ReportInputs:
    from ..model.evaluation import CVDesign
    from ..model.results import check_results_dir
    from ..report.build import prepare_out_dir, select_patients

    patients = select_patients(cohort, args.patients)
    design = CVDesign(args.folds, args.repeats, args.seed)
    stained = load_stain_cv(args.stain_cv, cohort, settings, design) if args.stain_cv else None
    out_dir = prepare_out_dir(args.out_dir)
    check_results_dir(args.cv_dir)
    return ReportInputs(patients, design, stained, out_dir)


def command_report(args, cohort, settings, checked: ReportInputs):
    from ..model.results import current_results, load_cv
    from ..report.build import build_report

    directory = args.cv_dir
    saved = load_cv(directory) if current_results(directory) else None
    if saved is None or not saved.matches(cohort, settings, checked.design):
        log.info("no saved cross-validation in %s for these embeddings, settings and folds: running it", directory)
        saved = run_cv(args, cohort, settings)
    print(f"report: {build_report(saved, cohort, checked.out_dir, checked.patients, checked.stained)}")


def load_stain_cv(directory: Path, cohort, settings, design):
    """Saved CV results to set beside the report's: the same patients, folds and settings, or refused (before any
    cross-validation runs)."""
    from ..evidence import require_stain_normalised
    from ..model.results import load_cv

    stained = load_cv(directory)
    require_stain_normalised(directory, stained.provenance, cohort.provenance)
    same = (stained.fingerprint == cohort.fingerprint and stained.comparison.design == design
            and stained.settings.spec == settings.spec and stained.settings.params == settings.params)
    if not same:
        raise InputError(f"--stain-cv {directory}: cross-validation of other patients, folds or settings than the "
                         "report's (run model.py cv on the stain-normalised embeddings with the same options)")
    return stained


def inputs_of(args, cohort) -> list[Path]:
    """Every file this run reads: no output may be one of them."""
    inputs = cohort_inputs(cohort)
    if getattr(args, "params", "auto") not in ("auto", "default"):
        inputs.append(Path(args.params))
    if args.command == "predict" and Path(args.model_dir).is_dir():
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
    return {"--out-dir": args.out_dir, "--cv-dir": args.cv_dir}


COMMANDS = {"cv": (check_cv, command_cv), "fit": (check_fit, command_fit), "report": (check_report, command_report)}


@cli_main
def main(argv=None):
    args = parse_args(argv)
    from ..evidence import require_cells_to_train
    from ..files import refuse_inputs_as_outputs
    from ..model.cohort import load_cohort
    from ..model.measurements import settings_for
    from ..model.tuned_params import load_settings
    from ..output_kinds import require_own_outputs

    outputs = outputs_of(args)
    refuse_nested_outputs(outputs)
    cohort = load_cohort([*args.embeddings, *args.measurements], args.root)
    refuse_inputs_as_outputs(outputs, inputs_of(args, cohort))
    require_own_outputs(outputs)
    # Every check runs before start_run, so a refused command leaves no run log behind.
    if args.command == "predict":
        checked = check_predict(args, cohort)
        start_run(args, args.command, args._home)
        command_predict(args, cohort, checked)
        return 0
    settings = settings_for(cohort, load_settings(args.params, cohort))
    require_cells_to_train(cohort, args.max_without_cells)
    check, command = COMMANDS[args.command]
    checked = check(args, cohort, settings)
    start_run(args, args.command, args._home)
    log.info("settings: %s", settings.source)
    command(args, cohort, settings, checked)
    return 0
