#!/usr/bin/env python
"""Stage 2: bag statistics + clinical attributes -> LightGBM; honest CV, fit, predict, report.

    python model.py cv      --embeddings artifacts/embeddings.h5 [--json artifacts/cv.json]
    python model.py fit     --embeddings artifacts/embeddings.h5 [--model-dir artifacts/model]
    python model.py predict --embeddings artifacts/embeddings.h5 [--model-dir artifacts/model]
    python model.py report  --embeddings artifacts/embeddings.h5

The dataset's CSVs are found through the embeddings file (its `dataset_root`), or given with --root.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lymphocytosis.atomic_files import atomic_write_json
from lymphocytosis.errors import InputError, cli_main

log = logging.getLogger("model")
DEFAULT_EMBEDDINGS = Path("artifacts/embeddings.h5")
DEFAULT_MODEL_DIR = Path("artifacts/model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--embeddings", type=Path, default=DEFAULT_EMBEDDINGS, help=f"HDF5 from extract.py (default: {DEFAULT_EMBEDDINGS})")
    common.add_argument("--root", type=Path, default=None, help="dataset root for the CSVs (default: the one recorded in the embeddings)")
    tuned = argparse.ArgumentParser(add_help=False)
    tuned.add_argument("--params", default="auto",
                       help="'auto' (tune.py's saved best for these embeddings if any, else defaults), 'default', or a JSON path")
    cv_options = argparse.ArgumentParser(add_help=False)
    cv_options.add_argument("--folds", type=int, default=5)
    cv_options.add_argument("--repeats", type=int, default=10)
    cv_options.add_argument("--seed", type=int, default=0)

    cv = commands.add_parser("cv", parents=[common, tuned, cv_options], help="repeated stratified CV, full vs clinical-only")
    cv.add_argument("--json", type=Path, default=None, help="write the results here")
    fit = commands.add_parser("fit", parents=[common, tuned], help="train on all labelled patients and save")
    fit.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    predict = commands.add_parser("predict", parents=[common], help="predict the unlabelled patients")
    predict.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    predict.add_argument("--out", type=Path, default=Path("artifacts/predictions.csv"), help="ID,LABEL,PROBABILITY")
    predict.add_argument("--submission", type=Path, default=Path("artifacts/submission.csv"), help="challenge format: Id,Predicted")
    predict.add_argument("--all", action="store_true", help="predict every patient, labelled ones included")
    report = commands.add_parser("report", parents=[common, tuned, cv_options], help="HTML/Markdown report with figures")
    report.add_argument("--out-dir", type=Path, default=None, help="default: artifacts/report-<date>")
    report.add_argument("--patients", default="all", help="'all', 'none' or comma-separated IDs for per-patient pages")
    return parser.parse_args(argv)


def format_cv_table(result: dict) -> str:
    def row(name, summary):
        ba, auc = summary["balanced_accuracy"], summary["roc_auc"]
        return f"| {name:<22} | {ba['mean']:.3f} ± {ba['std']:.3f} | {auc['mean']:.3f} ± {auc['std']:.3f} |"

    lines = [
        f"{result['n_patients']} labelled patients ({result['n_tumoral']} tumoral), "
        f"{result['folds']}-fold CV x {result['repeats']} repeats (seed {result['seed']}); mean ± std over repeats",
        "| model                  | balanced accuracy | ROC AUC         |",
        "|------------------------|-------------------|-----------------|",
        row("images + clinical", result),
        row("clinical only", result["clinical_only"]),
    ]
    return "\n".join(lines)


def command_cv(args, cohort, spec, params, source):
    from lymphocytosis.evaluation import cv_report

    result, _, _ = cv_report(cohort, spec, params, args.folds, args.repeats, args.seed)
    result["settings"] = {"source": source, "feature_spec": spec.to_dict(), "params": params}
    result["embeddings"] = {"path": str(cohort.embeddings_path), "model": cohort.provenance["model"],
                            "weights_sha256": cohort.provenance["weights_sha256"]}
    print(format_cv_table(result))
    if source != "defaults":
        print(f"settings from {source}: tuned on these patients, so this CV is optimistic; "
              "`python tune.py --nested` measures what tuning buys")
    if args.json:
        atomic_write_json(args.json, result)
        log.info("wrote %s", args.json)


def command_fit(args, cohort, spec, params, source):
    from lymphocytosis.classifier import PatientClassifier
    from lymphocytosis.embedding_store import identity
    from lymphocytosis.model_io import save_model

    ids = cohort.labelled_ids
    boosters, state, table = PatientClassifier(cohort, spec, params).fit(ids)
    training = {"n_patients": len(ids), "n_tumoral": int(cohort.labels(ids).sum()), "settings_source": source,
                "dataset_root": str(cohort.dataset_root), "embeddings_path": str(cohort.embeddings_path)}
    path = save_model(args.model_dir, spec, params, state, boosters, list(table.columns),
                      identity(cohort.provenance), training)
    print(f"saved model trained on {len(ids)} patients ({source}) to {path.parent}")


def command_predict(args, cohort):
    import pandas as pd

    from lymphocytosis.bag_features import FeatureBuilder
    from lymphocytosis.classifier import THRESHOLD, predict_boosters
    from lymphocytosis.model_io import check_same_provenance, load_model

    saved = load_model(args.model_dir)
    check_same_provenance(saved["embeddings_provenance"], cohort.provenance, cohort.embeddings_path)
    ids = cohort.ids if args.all else cohort.unlabelled_ids
    if not ids:
        raise InputError(f"{cohort.dataset_root}: no unlabelled patients (LABEL -1) to predict; use --all for every patient")
    table, _ = FeatureBuilder(cohort, saved["spec"]).transform(ids, saved["state"])
    if list(table.columns) != saved["feature_names"]:
        raise InputError(f"{args.model_dir}: the model's features differ from those built now; refit it")
    probability = predict_boosters(saved["boosters"], table)
    label = (probability >= THRESHOLD).astype(int)
    out = pd.DataFrame({"ID": ids, "LABEL": label, "PROBABILITY": probability.round(6)})
    for path, frame in ((args.out, out), (args.submission, out[["ID", "LABEL"]].rename(columns={"ID": "Id", "LABEL": "Predicted"}))):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    print(f"predicted {len(ids)} patients ({int(label.sum())} tumoral): {args.out}, submission {args.submission}")


@cli_main
def main(argv=None):
    args = parse_args(argv)
    from lymphocytosis.cohort import load_cohort
    from lymphocytosis.settings import load_settings

    cohort = load_cohort(args.embeddings, args.root)
    if args.command == "predict":
        return command_predict(args, cohort) or 0
    spec, params, source = load_settings(args.params, cohort)
    log.info("settings: %s", source)
    if args.command == "cv":
        command_cv(args, cohort, spec, params, source)
    elif args.command == "fit":
        command_fit(args, cohort, spec, params, source)
    elif args.command == "report":
        from lymphocytosis.report import build_report

        out = build_report(cohort, spec, params, source, args)
        print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
