"""`model.py predict`: the saved model's probability, label at an operating point, what each call rests on, and
whether the cohort looks like the training one (drift/).

A patient without a readable cell image is refused, or (--clinical-only-fallback) predicted by the clinical-only
model `fit` saved beside the image model (EVIDENCE 'clinical only'; see lymphocytosis/evidence.py). Such a patient's
LABEL comes from the clinical-only model's own thresholds: the requested operating point when that model has it
(fit saves it with the balanced one only, today), else 'balanced' (its OPERATING_POINT column says which, and the
log says why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError
from .decision_options import rule_of

if TYPE_CHECKING:  # imported late at run time: --help starts without LightGBM
    from ..model.classifier import FittedModel

log = logging.getLogger("model")
DRIFT_EXIT = 4  # predict --strict-drift: the cohort is out of distribution (or could not be checked)


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
    rule_of(model).operating_points.threshold(args.operating_point)  # refused now if the model has no such point
    empty = without_cells(cohort, ids)
    if not args.clinical_only_fallback:
        refuse_without_cells(empty)
        return PredictInputs(model, ids)
    clinical = load_clinical_model(args.model_dir, model) if empty else None
    return PredictInputs(model, ids, clinical, tuple(p.patient_id for p in empty))


def clinical_point(clinical, wanted: str) -> str:
    """The operating point the clinical-only model decides fallback patients at: `wanted` if it has it."""
    names = {point.name for point in rule_of(clinical).operating_points.points}
    if wanted in names:
        return wanted
    log.warning("the clinical-only model has no operating point %s: patients predicted from the clinical attributes "
                "alone are labelled at its balanced threshold (OPERATING_POINT 'balanced')", wanted)
    return "balanced"


def prediction_table(args, checked: PredictInputs, prediction):
    """ID, LABEL, PROBABILITY, RECALIBRATED_PROBABILITY (when a model recalibrates), OPERATING_POINT, EVIDENCE: each
    row's label, recalibration and operating point are those of the model that predicted it."""
    import numpy as np
    import pandas as pd

    fallback = np.isin(np.array(checked.ids, dtype=object), list(checked.fallback_ids))
    probabilities = prediction.probabilities
    points = np.full(len(checked.ids), args.operating_point, dtype=object)
    thresholds = np.full(len(checked.ids), rule_of(checked.model).operating_points.threshold(args.operating_point))
    recalibrated = np.full(len(checked.ids), np.nan)
    rules = [(rule_of(checked.model), ~fallback)]
    if fallback.any():
        point = clinical_point(checked.clinical, args.operating_point)
        points[fallback] = point
        thresholds[fallback] = rule_of(checked.clinical).operating_points.threshold(point)
        rules.append((rule_of(checked.clinical), fallback))
    for rule, rows in rules:
        if rule.recalibrated and rows.any():
            recalibrated[rows] = rule.recalibration.apply(probabilities[rows])
    out = pd.DataFrame({"ID": checked.ids, "LABEL": (probabilities >= thresholds).astype(int),
                        "PROBABILITY": probabilities.round(6)})
    if any(rule.recalibrated for rule, rows in rules):  # a risk: through the recalibration fitted with each model
        out["RECALIBRATED_PROBABILITY"] = recalibrated.round(6)
    out["OPERATING_POINT"] = points
    out["EVIDENCE"] = prediction.evidence
    return out


def command_predict(args, run, cohort, checked: PredictInputs):
    import numpy as np

    from ..drift.check import check_drift
    from ..files import atomic_output
    from ..model.fallback import predict_with_evidence

    model, ids = checked.model, checked.ids
    prediction = predict_with_evidence(model, checked.clinical, cohort, ids, list(checked.fallback_ids))
    if len(ids) > 1 and np.ptp(prediction.probabilities) == 0:
        log.warning("every patient got the same probability (%.4f): the model does not separate these patients",
                    prediction.probabilities[0])
    rule = rule_of(model)
    log.info("recalibration: %s", f"{rule.recalibration.method} (RECALIBRATED_PROBABILITY)" if rule.recalibrated
             else "none (it did not lower the cross-validated Brier score, or the model has none)")
    out = prediction_table(args, checked, prediction)
    verdict = check_drift(model.drift_reference, cohort, ids)
    out["DISTRIBUTION"], out["DRIFT_REASON"] = verdict.distribution, verdict.reasons
    submission = out[["ID", "LABEL"]].rename(columns={"ID": "Id", "LABEL": "Predicted"})
    for path, frame in ((args.out, out), (args.submission, submission)):
        with atomic_output(path) as tmp:
            frame.to_csv(tmp, index=False)
    if checked.fallback_ids:
        log.warning("%d patient(s) without a readable cell image predicted from the clinical attributes alone "
                    "(EVIDENCE 'clinical only'): %s", len(checked.fallback_ids), ", ".join(checked.fallback_ids))
    threshold = rule.operating_points.threshold(args.operating_point)
    print(f"predicted {len(ids)} patients ({int(out['LABEL'].sum())} tumoral at {args.operating_point}, threshold "
          f"{threshold:.4f}): {args.out}, submission {args.submission}")
    for line in verdict.lines:
        print(line)
        log.debug(line)
    return DRIFT_EXIT if args.strict_drift and verdict.cohort_out is not False else 0
