"""`model.py evaluate` (= `lymphocytosis evaluate`): a saved model on every labelled patient of another cohort.

    model.py evaluate --model-dir artifacts/dlmi/model --embeddings artifacts/site2/embeddings.h5 --out-dir eval/

Checked before anything runs: the model loads, the cohort's embeddings have the model's provenance, the output
folder is new, empty or an earlier evaluation (everything in it written there by the tool), no patient of the cohort
was in the model's training set, and every patient has a readable cell image (see lymphocytosis/evidence.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model.classifier import FittedModel


log = logging.getLogger("model")


@dataclass(frozen=True)
class EvaluateInputs:
    model: FittedModel


def check_evaluate(args, cohort) -> EvaluateInputs:
    from ..contract.provenance import require_same_sets
    from ..errors import InputError
    from ..evidence import refuse_without_cells, require_cells_to_train, without_cells
    from ..model.external import check_unseen
    from ..model.persistence import load_model
    from ..report.evaluation_report import check_out_dir

    check_out_dir(args.out_dir)
    model = load_model(args.model_dir)
    require_same_sets(model.provenance, cohort.provenance,
                      f"{cohort.primary.path}: embeddings of another provenance than the model was trained on",
                      "re-extract the cohort with the model's settings (model's first)")
    if not cohort.labelled_ids:
        raise InputError(f"{cohort.dataset_root}: no labelled patients (LABEL 0 or 1) to evaluate the model on")
    require_cells_to_train(cohort, args.max_without_cells)
    refuse_without_cells(without_cells(cohort, cohort.labelled_ids), "evaluate")
    check_unseen(model, cohort, cohort.labelled_ids)
    return EvaluateInputs(model)


def command_evaluate(args, run, cohort, checked: EvaluateInputs) -> None:
    from ..drift.check import check_drift
    from ..model.external import clinical_headline, headline, judged_external, per_patient_rows, score
    from ..report.evaluation_report import write_evaluation

    external = score(checked.model, cohort)
    head = headline(external)
    verdict = check_drift(checked.model.drift_reference, cohort, list(external.ids))
    patients = per_patient_rows(external)
    for row, distribution, reason in zip(patients, verdict.distribution, verdict.reasons):
        row["DISTRIBUTION"], row["DRIFT_REASON"] = distribution, reason
    results = {
        "model": {"dir": str(args.model_dir), "n_training_patients": len(checked.model.decision.training_patients)},
        "cohort": {"embeddings": str(cohort.primary.path), "dataset_root": str(cohort.dataset_root),
                   "n_patients": len(external.ids), "n_tumoral": int(external.labels.sum()),
                   "fingerprint": cohort.fingerprint, "data_fingerprint": cohort.data_fingerprint},
        "command": run.command_line("model.py"),
        "headline": head, "clinical_only": clinical_headline(external),
        "judged": judged_external(external, args.prevalence), "patients": patients,
        "drift": {"verdict": verdict.line, "cohort_out": verdict.cohort_out, "reasons": verdict.cohort_reasons,
                  "notes": verdict.notes},
    }
    out = write_evaluation(args.out_dir, results)
    print(f"evaluated on {len(external.ids)} patients: balanced accuracy {head['balanced_accuracy']['value']:.3f} "
          f"({head['balanced_accuracy']['low']:.3f}–{head['balanced_accuracy']['high']:.3f}), ROC AUC "
          f"{head['roc_auc']['value']:.3f} ({head['roc_auc']['low']:.3f}–{head['roc_auc']['high']:.3f}); {out}")
    for line in verdict.lines:
        print(line)
        log.debug(line)
