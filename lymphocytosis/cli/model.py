"""`model.py`: bag statistics + clinical attributes -> LightGBM; honest CV, fit, predict, report.

    python model.py cv      --embeddings artifacts/embeddings.h5 [--json artifacts/cv.json]
    python model.py fit     --embeddings artifacts/embeddings.h5 [--model-dir artifacts/model]
    python model.py predict --embeddings artifacts/embeddings.h5 [--model-dir artifacts/model]
    python model.py report  --embeddings artifacts/embeddings.h5

The dataset's CSVs are found through the embeddings file (its `dataset_root`), or given with --root.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..defaults import DEFAULT_EMBEDDINGS, DEFAULT_MODEL_DIR
from ..errors import InputError
from ..files import atomic_write_json
from .common import cli_main

log = logging.getLogger("model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--embeddings", type=Path, default=DEFAULT_EMBEDDINGS,
                        help=f"HDF5 from extract.py (default: {DEFAULT_EMBEDDINGS})")
    common.add_argument("--root", type=Path, default=None,
                        help="dataset root for the CSVs (default: the one recorded in the embeddings)")
    common.add_argument("--measurements", type=Path, nargs="+", default=[],
                        help="measurement files of the same images (extract.py --measure morphometry): their features "
                             "join the model (with the defaults: each quantity's per-patient median)")
    tuned = argparse.ArgumentParser(add_help=False)
    tuned.add_argument("--params", default="auto",
                       help="'auto' (tune.py's saved best for these embeddings if any, else defaults), 'default', or a JSON path")
    cv_options = argparse.ArgumentParser(add_help=False)
    cv_options.add_argument("--folds", type=int, default=5)
    cv_options.add_argument("--repeats", type=int, default=10)
    cv_options.add_argument("--seed", type=int, default=0)
    cv_options.add_argument("--cv-dir", type=Path, default=None,
                            help="saved cross-validation results (default: cv/ beside the embeddings)")

    cv = commands.add_parser("cv", parents=[common, tuned, cv_options], help="repeated stratified CV, full vs clinical-only")
    cv.add_argument("--json", type=Path, default=None, help="also write the headline results here")
    fit = commands.add_parser("fit", parents=[common, tuned], help="train on all labelled patients and save")
    fit.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    predict = commands.add_parser("predict", parents=[common], help="predict the unlabelled patients")
    predict.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    predict.add_argument("--out", type=Path, default=Path("artifacts/predictions.csv"), help="ID,LABEL,PROBABILITY")
    predict.add_argument("--submission", type=Path, default=Path("artifacts/submission.csv"),
                         help="challenge format: Id,Predicted")
    predict.add_argument("--all", action="store_true", help="predict every patient, labelled ones included")
    report = commands.add_parser("report", parents=[common, tuned, cv_options], help="HTML/Markdown report with figures")
    report.add_argument("--out-dir", type=Path, default=None, help="default: artifacts/report-<date>")
    report.add_argument("--patients", default="all", help="'all', 'none' or comma-separated IDs for per-patient pages")
    report.add_argument("--stain-cv", type=Path, default=None,
                        help="saved cross-validation (model.py cv --cv-dir) of the same settings on embeddings extracted "
                             "with --stain: the report then says how much of the image signal survives stain normalisation")
    return parser.parse_args(argv)


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


def cv_dir_for(args) -> Path:
    return args.cv_dir or Path(args.embeddings).parent / "cv"


def run_cv(args, cohort, settings):
    """Cross-validate, save the results folder (models and explanations kept), and return the saved results."""
    from ..model.evaluation import CVDesign, compare
    from ..model.explanations import explain
    from ..model.results import load_cv, save_cv

    started = time.perf_counter()
    comparison = compare(cohort, settings.spec, settings.params, CVDesign(args.folds, args.repeats, args.seed),
                         keep_models=True)
    directory = save_cv(cv_dir_for(args), comparison, explain(comparison.full), settings, cohort,
                        time.perf_counter() - started)
    log.info("wrote cross-validation results to %s", directory)
    return load_cv(directory)


def command_cv(args, cohort, settings):
    saved = run_cv(args, cohort, settings)
    print(format_cv_table(saved.comparison))
    if settings.tuned:
        print(f"settings from {settings.source}: tuned on these patients, so this CV is optimistic; "
              "`python tune.py --nested` measures what tuning buys")
    if args.json:
        document = saved.comparison.summary_dict()
        document["settings"] = settings.to_dict()
        document["embeddings"] = {"path": str(cohort.primary.path), "model": cohort.primary.provenance["model"],
                                  "weights_sha256": cohort.primary.provenance["weights_sha256"]}
        atomic_write_json(args.json, document)
        log.info("wrote %s", args.json)


def command_fit(args, cohort, settings):
    from ..model.classifier import FittedModel

    ids = cohort.labelled_ids
    training = {"n_patients": len(ids), "n_tumoral": int(cohort.labels(ids).sum()), "settings_source": settings.source,
                "dataset_root": str(cohort.dataset_root), "embeddings_path": [str(s.path) for s in cohort.sets]}
    FittedModel.fit(cohort, ids, settings.spec, settings.params, training).save(args.model_dir)
    print(f"saved model trained on {len(ids)} patients ({settings.source}) to {args.model_dir}")


def command_predict(args, cohort):
    import pandas as pd

    from ..files import atomic_output
    from ..model.classifier import FittedModel
    from ..provenance import require_same_sets

    model = FittedModel.load(args.model_dir)
    require_same_sets(model.provenance, cohort.provenance,
                      f"{cohort.primary.path}: embeddings of another provenance than the model was trained on",
                      "re-extract with the model's settings (model's first)")
    ids = cohort.ids if args.all else cohort.unlabelled_ids
    if not ids:
        raise InputError(f"{cohort.dataset_root}: no unlabelled patients (LABEL -1) to predict; use --all for every patient")
    prediction = model.predict_proba(cohort, ids)
    out = pd.DataFrame({"ID": ids, "LABEL": prediction.labels, "PROBABILITY": prediction.probabilities.round(6)})
    submission = out[["ID", "LABEL"]].rename(columns={"ID": "Id", "LABEL": "Predicted"})
    for path, frame in ((args.out, out), (args.submission, submission)):
        with atomic_output(path) as tmp:
            frame.to_csv(tmp, index=False)
    print(f"predicted {len(ids)} patients ({int(prediction.labels.sum())} tumoral): {args.out}, submission {args.submission}")


def command_report(args, cohort, settings):
    from ..model.evaluation import CVDesign
    from ..model.results import load_cv
    from ..report.build import build_report, prepare_out_dir, select_patients

    patients = select_patients(cohort, args.patients)
    design = CVDesign(args.folds, args.repeats, args.seed)
    stained = load_stain_cv(args.stain_cv, cohort, settings, design) if args.stain_cv else None
    out_dir = prepare_out_dir(args.out_dir)
    directory = cv_dir_for(args)
    saved = load_cv(directory) if (directory / "cv.json").is_file() else None
    if saved is None or not saved.matches(cohort, settings, design):
        log.info("no saved cross-validation in %s for these embeddings, settings and folds: running it", directory)
        saved = run_cv(args, cohort, settings)
    print(f"report: {build_report(saved, cohort, out_dir, patients, stained)}")


def load_stain_cv(directory: Path, cohort, settings, design):
    """Saved CV results to set beside the report's: the same patients, folds and settings, or refused (before any
    cross-validation runs)."""
    from ..model.results import load_cv

    stained = load_cv(directory)
    same = (stained.fingerprint == cohort.fingerprint and stained.comparison.design == design
            and stained.settings.spec == settings.spec and stained.settings.params == settings.params)
    if not same:
        raise InputError(f"--stain-cv {directory}: cross-validation of other patients, folds or settings than the "
                         "report's (run model.py cv on the stain-normalised embeddings with the same options)")
    return stained


@cli_main
def main(argv=None):
    args = parse_args(argv)
    from ..model.cohort import load_cohort
    from ..model.measurements import settings_for
    from ..model.tuned_params import load_settings

    cohort = load_cohort([args.embeddings, *args.measurements], args.root)
    if args.command == "predict":
        command_predict(args, cohort)
        return 0
    settings = settings_for(cohort, load_settings(args.params, cohort))
    log.info("settings: %s", settings.source)
    {"cv": command_cv, "fit": command_fit, "report": command_report}[args.command](args, cohort, settings)
    return 0
