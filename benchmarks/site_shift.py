#!/usr/bin/env python
"""Site shift: how the model's calls move when the same patients' images come from another acquisition, and
whether `predict`'s drift check notices.

    python benchmarks/site_shift.py --embeddings artifacts/dlmi/embeddings.h5 [--repeats 10] [--changes jpeg60 ...]
        [--out artifacts/site_shift/dlmi/site_shift.md]

For each acquisition change of the panel (lymphocytosis/acquisition.py) every labelled image of the dataset is
changed (whole 224 px image, before the tool's crop) and written to a cache folder as a dataset of its own, then
embedded with the project's extraction and the settings of the unchanged file (site_shift_data.py; cached under
artifacts/site_shift/<dataset>/, reused on a rerun). Then, for every outer fold of the repeated stratified CV of
`model.py cv` (same folds: same --folds, --repeats, --seed), the model is fitted on the unchanged training
folds and predicts the test fold unchanged ("none") and under each change. Per change, paired against "none"
repeat by repeat: balanced accuracy and ROC AUC, the mean shift of the probability, the calls that flip; and
the drift check (lymphocytosis/drift), its reference built on the same training folds: the share of test
patients flagged `out`, the share of test folds (cohorts of ~24 patients) flagged OUT OF DISTRIBUTION, and
the reasons it gave. Several --embeddings files (e.g. one extracted with --stain reinhard) each get a table.
Writes a Markdown table (--out) and the same numbers as JSON beside it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from site_shift_data import prepare

from lymphocytosis.acquisition import CHANGES
from lymphocytosis.contract.store import read_provenance
from lymphocytosis.drift.check import verdict_of
from lymphocytosis.drift.reference import fit_reference, image_signal_frame, signal_frame
from lymphocytosis.files import atomic_output, atomic_write_json, atomic_write_text
from lymphocytosis.metrics import Scores, decide
from lymphocytosis.model.classifier import FittedModel
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.evaluation import repeated_folds
from lymphocytosis.model.feature_spec import FeatureSpec
from lymphocytosis.model.measurements import settings_for
from lymphocytosis.model.tuned_params import load_settings

log = logging.getLogger("site_shift")
NONE = "none"
BA_BUDGET = 0.03  # a change that costs more than this must be flagged


@dataclass
class ChangeResult:
    """One change's out-of-fold probabilities per repeat and its drift verdicts per fold."""

    probabilities: np.ndarray  # (repeats, patients)
    patients_out: list[int] = field(default_factory=list)  # per fold: test patients flagged out
    patients_seen: list[int] = field(default_factory=list)
    cohorts_out: list[bool] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)


def cached_files(args, embeddings: Path) -> dict[str, Path]:
    stem = embeddings.stem
    cache = args.cache / ("embeddings" if stem == "embeddings" else f"embeddings-{stem}")
    return prepare(args.root, args.cache, embeddings, args.changes, embeddings_dir=cache)


def cached_signals(path: Path, cohort, ids: list[str]) -> pd.DataFrame:
    """The patients' image signals, read from the images once and kept in the cache (they depend on the images
    only)."""
    if path.is_file():
        frame = pd.read_csv(path, index_col=0)
        if sorted(frame.index.astype(str)) == sorted(ids):
            frame.index = frame.index.astype(str)
            return frame.reindex(ids)
    frame = image_signal_frame(cohort, ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        frame.to_csv(tmp)
    return frame


def load_cohorts(args, embeddings: Path) -> dict:
    """The unchanged cohort (with its training views) and each change's, loaded once for every weight."""
    files = cached_files(args, embeddings)
    return {NONE: load_cohort(embeddings, args.root),  # the changed cohorts are only predicted: no views
            **{name: load_cohort(path, views=False) for name, path in files.items()}}


def run_variant(args, cohorts: dict, invariance: float) -> tuple[dict[str, ChangeResult], np.ndarray]:
    """Every fold fitted on the unchanged cohort (its training views, when beside it, with this invariance
    weight), its test patients predicted and drift-checked under each change."""
    base = cohorts[NONE]
    settings = settings_for(base, load_settings("default", base))
    settings = replace(settings, spec=replace(settings.spec, cell_score_invariance=invariance))
    ids = base.labelled_ids
    index = {patient_id: i for i, patient_id in enumerate(ids)}
    started = time.perf_counter()
    images = {name: cached_signals(args.cache / "signals" / f"{name}.csv", cohort, ids) for name, cohort in cohorts.items()}
    log.info("image signals of %d patients x %d conditions in %.0fs", len(ids), len(cohorts), time.perf_counter() - started)
    results = {name: ChangeResult(np.full((args.repeats, len(ids)), np.nan)) for name in cohorts}
    for fold in repeated_folds(ids, base.labels(ids), args.folds, args.repeats, args.seed):
        train, test = list(fold.train_ids), list(fold.test_ids)
        model = FittedModel.fit(base, train, settings.spec, settings.params)
        reference = fit_reference(base, train, images[NONE].loc[train])
        for name, cohort in cohorts.items():
            result = results[name]
            columns = [index[p] for p in test]
            result.probabilities[fold.repeat, columns] = model.predict_proba(cohort, test).probabilities
            verdict = verdict_of(reference, signal_frame(cohort, test, reference.embedding, images[name].loc[test]))
            result.patients_out.append(verdict.distribution.count("out"))
            result.patients_seen.append(len(test))
            result.cohorts_out.append(bool(verdict.cohort_out))
            result.reasons.update(verdict.cohort_reasons)
        log.info("repeat %d fold %d done (%.0fs)", fold.repeat, fold.fold, time.perf_counter() - started)
    return results, base.labels(ids)


def summarise(results: dict[str, ChangeResult], labels: np.ndarray) -> dict[str, dict]:
    """Per change: metrics per repeat, paired differences to "none", probability shift, flipped calls, drift."""
    reference = results[NONE].probabilities
    base_scores = [Scores.of(labels, row) for row in reference]
    rows = {}
    for name, result in results.items():
        scores = [Scores.of(labels, row) for row in result.probabilities]
        ba = np.array([s.balanced_accuracy for s in scores])
        auc = np.array([s.roc_auc for s in scores])
        d_ba = ba - np.array([s.balanced_accuracy for s in base_scores])
        d_auc = auc - np.array([s.roc_auc for s in base_scores])
        flips = (decide(result.probabilities) != decide(reference)).sum(axis=1)
        to_tumoral = ((decide(result.probabilities) == 1) & (decide(reference) == 0)).sum(axis=1)
        rows[name] = {
            "description": "unchanged" if name == NONE else CHANGES[name].description,
            "balanced_accuracy": [float(ba.mean()), float(ba.std())],
            "roc_auc": [float(auc.mean()), float(auc.std())],
            "delta_balanced_accuracy": [float(d_ba.mean()), float(d_ba.std())],
            "delta_roc_auc": [float(d_auc.mean()), float(d_auc.std())],
            "mean_probability_shift": float((result.probabilities - reference).mean()),
            "flipped_calls": float(flips.mean()), "flipped_to_tumoral": float(to_tumoral.mean()),
            "patients_out": sum(result.patients_out) / sum(result.patients_seen),
            "cohorts_out": float(np.mean(result.cohorts_out)),
            "cohort_reasons": dict(result.reasons.most_common()),
        }
        costly = -rows[name]["delta_balanced_accuracy"][0] > BA_BUDGET
        rows[name]["costs_more_than_budget"] = bool(costly)
    return rows


def markdown(title: str, rows: dict[str, dict], n_patients: int, args) -> str:
    lines = [f"### {title}", "",
             f"{n_patients} patients, {args.folds}-fold CV x {args.repeats} repeats (seed {args.seed}); mean ± std over "
             "repeats; Δ paired against \"none\" repeat by repeat; flips: calls that change (of which to tumoral), "
             "per repeat; drift: test patients flagged `out`, test folds flagged OUT OF DISTRIBUTION.", "",
             "| change | balanced accuracy | Δ BA | ROC AUC | Δ AUC | mean prob. shift | flips (→ tumoral) "
             "| patients out | cohorts out | reasons given |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _name, row in rows.items():
        ba, dba, auc, dauc = (row[k] for k in ("balanced_accuracy", "delta_balanced_accuracy", "roc_auc", "delta_roc_auc"))
        mark = " **(> 0.03)**" if row["costs_more_than_budget"] else ""
        reasons = ", ".join(f"{k} ({v})" for k, v in list(row["cohort_reasons"].items())[:3]) or "—"
        lines.append(f"| {row['description']} | {ba[0]:.3f} ± {ba[1]:.3f} | {dba[0]:+.3f} ± {dba[1]:.3f}{mark} "
                     f"| {auc[0]:.3f} ± {auc[1]:.3f} | {dauc[0]:+.3f} ± {dauc[1]:.3f} | {row['mean_probability_shift']:+.3f} "
                     f"| {row['flipped_calls']:.1f} ({row['flipped_to_tumoral']:.1f}) | {row['patients_out']:.1%} "
                     f"| {row['cohorts_out']:.0%} | {reasons} |")
    return "\n".join([*lines, "", calibration(rows)])


def calibration(rows: dict[str, dict]) -> str:
    """The drift check against its two targets, in words."""
    costly = {name: row for name, row in rows.items() if row["costs_more_than_budget"]}
    missed = [f"{row['description']} ({row['cohorts_out']:.0%} of folds)" for row in costly.values()
              if row["cohorts_out"] < 1.0]
    return (f"Drift check: {rows[NONE]['patients_out']:.1%} of unchanged held-out patients flagged `out` (target: at "
            f"most 5%), {rows[NONE]['cohorts_out']:.0%} of unchanged test folds flagged; {len(costly)} change(s) cost more "
            f"than {BA_BUDGET} BA, " + (f"not always flagged: {'; '.join(missed)}." if missed else
                                        "each flagged OUT OF DISTRIBUTION in every test fold."))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, nargs="+", default=[Path("artifacts/dlmi/embeddings.h5")],
                        help="unchanged embeddings file(s): the default model's, and any robustness option's")
    parser.add_argument("--root", type=Path, default=None, help="the dataset; default: the one the embeddings record")
    parser.add_argument("--changes", nargs="+", default=list(CHANGES), choices=list(CHANGES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--invariance", type=float, nargs="+", default=[FeatureSpec().cell_score_invariance, 0.0],
                        help="weights of the cell score's invariance penalty, a table each (used when the embeddings "
                             "have their training views beside them); default: the default model's, and 0 (none)")
    parser.add_argument("--cache", type=Path, default=None, help="default: artifacts/site_shift/<dataset>")
    parser.add_argument("--out", type=Path, default=None, help="Markdown table; default: <cache>/site_shift.md")
    args = parser.parse_args(argv)
    if any(weight < 0 for weight in args.invariance):
        parser.error("--invariance: weights must be 0 or more")
    args.invariance = list(dict.fromkeys(args.invariance))  # a weight given twice is one table
    args.root = args.root or Path(read_provenance(args.embeddings[0])["dataset_root"])
    args.cache = args.cache or Path("artifacts/site_shift") / args.root.resolve().name
    args.out = args.out or args.cache / "site_shift.md"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lymphocytosis").setLevel(logging.WARNING)
    sections, document = [], {"command": " ".join(sys.argv), "folds": args.folds, "repeats": args.repeats,
                              "seed": args.seed, "variants": {}}
    for embeddings in args.embeddings:
        cohorts = load_cohorts(args, embeddings)
        has_views = bool(cohorts[NONE].training_views)
        for invariance in (args.invariance if has_views else [0.0]):
            title = (f"{embeddings}, training views, invariance weight {invariance:g}" if invariance > 0 else
                     f"{embeddings}, {'without' if has_views else 'no'} training views")
            results, labels = run_variant(args, cohorts, invariance)
            rows = summarise(results, labels)
            document["variants"][title] = rows
            sections.append(markdown(title, rows, len(labels), args))
    text = "\n\n".join(sections) + "\n"
    print(text)
    atomic_write_text(args.out, text)
    atomic_write_json(args.out.with_suffix(".json"), document)
    log.info("wrote %s and %s", args.out, args.out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
