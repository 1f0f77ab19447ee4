"""MODEL_CARD.md: what a saved model is, how well it did, and what it is not for, in a hematologist's words.

`fit` writes it beside model.json, atomically, from what it just trained and (when there is one for the same
embeddings, patients and settings) the saved cross-validation, whose numbers are those of the whole procedure
`fit` runs, thresholds included. Without such a CV it says so rather than quoting another run.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..files import atomic_write_text
from ..metrics import Estimate, bootstrap_intervals
from .classifier import FittedModel
from .cohort import Cohort
from .operating_points import point_name
from .persistence import MODEL_CARD, booster_text, model_lock

log = logging.getLogger(__name__)

INTENDED_USE = """\
- **What for:** to help decide which patients with a lymphocytosis go to flow cytometry: it estimates whether
  the lymphocytosis is tumoral (a leukaemia cytometry would confirm) or reactive, from the blood smear's cell
  images and the patient's age, sex and lymphocyte count.
- **For whom:** hematologists and laboratory staff who read its output beside the smear and the clinical
  picture, and the data scientists who maintain it.
- **Not for:** a diagnosis. A patient it calls reactive is not proven reactive; one it calls tumoral needs
  cytometry to confirm. Not for children, other cell types, or images from a different analyser or stain
  without first checking it there (`lymphocytosis evaluate` on a labelled cohort of your own)."""

KNOWN_LIMITS = """\
- Trained on one small cohort ({n} patients, one site): its numbers carry the wide intervals shown, and it has
  not been validated on another site here.
- Part of the image signal can be slide colour rather than cell shape: on stain-normalised images the gain over
  the clinical attributes shrinks (see the stain study of the documentation).
- Its raw probability is not a risk: training weighs both classes equally, so it is pulled towards 0.5 whatever
  the prevalence. Read the recalibrated probability, when the model carries one, as the risk.
- The thresholds ({points}) were chosen on out-of-fold predictions of these {n} patients; on another
  cohort, their sensitivity can be lower. Check it there before relying on it."""


def cohort_lines(cohort: Cohort, ids: list[str]) -> list[str]:
    """Sizes, class balance and clinical ranges of the training patients, per class."""
    table = cohort.clinical.loc[ids]
    lines = [f"- {len(ids)} patients: {int((table['label'] == 1).sum())} tumoral, {int((table['label'] == 0).sum())} "
             f"reactive (prevalence {(table['label'] == 1).mean():.2f})."]
    for label, name in ((1, "tumoral"), (0, "reactive")):
        part = table[table["label"] == label]
        if part.empty:
            continue
        age, count = part["age"], part["lymph_count"]
        lines.append(f"- {name}: age {age.min():.0f}-{age.max():.0f} (median {age.median():.0f}), lymphocytes "
                     f"{count.min():.1f}-{count.max():.1f} x10^9/L (median {count.median():.1f}), "
                     f"{int(part['sex_male'].sum())} men / {int((1 - part['sex_male']).sum())} women.")
    return lines


def cv_lines(saved) -> list[str]:
    """The saved CV's results with intervals, images + clinical beside clinical only, and its operating points."""
    from .decision_results import judged

    comparison = saved.comparison
    design = comparison.design
    lines = [f"{design.folds}-fold cross-validation x {design.repeats} repeats over patients (seed {design.seed}); "
             "mean over repeats (95% bootstrap interval over patients):", "",
             "| model | balanced accuracy | ROC AUC |", "|---|---|---|"]
    for name, result in (("images + clinical", comparison.full), ("clinical only", comparison.clinical)):
        intervals = bootstrap_intervals(result.labels, result.probabilities)
        summary = result.summary
        lines.append(f"| {name} | {summary.balanced_accuracy.mean:.3f} ({intervals['balanced_accuracy']}) | "
                     f"{summary.roc_auc.mean:.3f} ({intervals['roc_auc']}) |")
    if saved.decisions is None:
        return lines
    result = judged(saved.decisions, comparison)
    lines += ["", "Each threshold chosen inside the training folds, judged on the held-out fold:", "",
              "| operating point | sensitivity (tumoral found) | reactive spared cytometry | sent to cytometry |",
              "|---|---|---|---|"]
    for name, point in result["operating_points"].items():
        lines.append(f"| {name} | {Estimate(**point['sensitivity']).percent()} | "
                     f"{Estimate(**point['specificity']).percent()} | {Estimate(**point['sent_to_cytometry']).percent()} |")
    calibration = result["calibration"]
    lines += ["", f"Calibration (lower is better): Brier score {Estimate(**calibration['raw']['brier'])} as trained, "
              f"{Estimate(**calibration['recalibrated']['brier'])} recalibrated; expected calibration error "
              f"{Estimate(**calibration['raw']['ece'])} as trained, {Estimate(**calibration['recalibrated']['ece'])} "
              "recalibrated."]
    return lines


def matching_cv(cv_dir: Path | None, cohort: Cohort, settings, model: FittedModel):
    """The saved CV of these embeddings, patients and settings under `cv_dir` (its per-settings folders, or an
    earlier version's plain layout; see saved_runs.py), the one of most folds x repeats; or None (absent, older,
    other settings or operating points, or unreadable)."""
    from .results import current_results, load_cv
    from .saved_runs import candidates

    found = []
    for directory in candidates(cv_dir) if cv_dir is not None else []:
        if not current_results(directory):
            continue
        try:
            saved = load_cv(directory)
        except InputError as exc:
            log.warning("model card: a saved cross-validation is not used (%s)", exc)
            continue
        same_points = saved.decisions is None or [point_name(s) for s in saved.decisions.sensitivities] == point_names(model)
        if saved.matches(cohort, settings, saved.comparison.design) and same_points:
            found.append(saved)
    return max(found, key=lambda s: s.comparison.design.folds * s.comparison.design.repeats, default=None)


def point_names(model: FittedModel) -> list[str]:
    """The model's operating points other than balanced (sens95, ...)."""
    if model.decision is None:
        return []
    return [p.name for p in model.decision.rule.operating_points.points if p.target]


def rule_lines(model: FittedModel) -> list[str]:
    if model.decision is None:
        return ["- balanced (probability >= 0.5) only."]
    rule = model.decision.rule
    lines = [f"- {p.name}: tumoral when the probability is at least {p.threshold:.4f}"
             + (f" (chosen for {100 * p.target:g}% sensitivity on out-of-fold predictions)" if p.target else
                " (the threshold training targets: balanced accuracy)") for p in rule.operating_points.points]
    scores = ", ".join(f"{k} {v:.4f}" for k, v in rule.recalibration_brier.items())
    lines.append(f"- Recalibration: **{rule.recalibration.method}** "
                 + ("(it lowered the cross-validated Brier score: " if rule.recalibrated else
                    "(none lowered the cross-validated Brier score: ") + f"{scores}).")
    return lines


def provenance_lines(model: FittedModel, cohort: Cohort) -> list[str]:
    lines = [f"- {name}: network {p.get('model')}, weights SHA-256 {str(p.get('weights_sha256'))[:16]}"
             for name, p in model.provenance.items()]
    lines += [views_line(name, weight) for name, weight in model.features.invariance.items()]
    if model.spec.cell_score and not model.features.invariance:
        lines.append("- Cell score fitted by a version without training views: it has not learnt to ignore acquisition "
                     "changes.")
    lines += [f"- Training patients and labels: fingerprint {cohort.fingerprint}; their cells and CSV rows: "
              f"{cohort.data_fingerprint}.",
              f"- Boosters: {', '.join(booster_digest(b) for b in model.boosters)} (see model.json).",
              f"- Tool version {__version__}; written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}."]
    return lines


def views_line(name: str, weight: float) -> str:
    """Whether the cell score learnt to ignore acquisition changes (the training views): a reader moving the
    model to another laboratory needs to know."""
    if weight > 0:
        return (f"- {name}: cell score fitted with training views (invariance weight {weight:g}): it learnt to give a "
                "cell the same score under random compression, stain, colour, focus and magnification changes.")
    return (f"- {name}: cell score fitted WITHOUT training views: it has not learnt to ignore acquisition changes, "
            "so another laboratory's compression, stain or focus can move its calls.")


def booster_digest(booster) -> str:
    return booster_text(booster)[1][:16]


def card_text(model: FittedModel, cohort: Cohort, settings, saved, command: str) -> str:
    ids = cohort.labelled_ids
    cv = cv_lines(saved) if saved is not None else [
        "No saved cross-validation of these embeddings, patients and settings: run `model.py cv` with the same "
        "options, then `fit` again, to have its results here."]
    parts = ["# Model card: tumoral or reactive lymphocytosis", "",
             "## Intended use", "", INTENDED_USE, "",
             "## Training cohort", "", *cohort_lines(cohort, ids), "",
             "## How well it did (cross-validation)", "", *cv, "",
             "## Operating points and calibration of this model", "", *rule_lines(model), "",
             "## Known limits", "", KNOWN_LIMITS.format(n=len(ids), points=", ".join(point_names(model)) or "none"), "",
             "## Provenance", "", f"- Settings: {settings.source}.", *provenance_lines(model, cohort), "",
             "## Made by", "", f"    {command}", ""]
    return "\n".join(parts)


def write_model_card(directory: Path, model: FittedModel, cohort: Cohort, settings, cv_dir: Path | None,
                     command: str) -> Path:
    """Write <directory>/MODEL_CARD.md atomically, under the model folder's lock (as model.json is); `command` is
    the command line that made the model."""
    text = card_text(model, cohort, settings, matching_cv(cv_dir, cohort, settings, model), command)
    path = Path(directory) / MODEL_CARD
    with model_lock(directory, exclusive=True):
        atomic_write_text(path, text)
    log.info("wrote %s", path)
    return path
