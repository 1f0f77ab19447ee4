"""What the report says: the sections of the document, from saved CV results and what was drawn from them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .. import __version__
from ..metrics import THRESHOLD, Interval, decide, plus_minus
from ..model.cohort import Cohort
from ..model.results import SavedCV
from .decision_section import decision_section
from .document import (
    Card,
    Cards,
    Code,
    Columns,
    Document,
    Heading,
    Image,
    Link,
    Mark,
    Paragraph,
    Section,
    Table,
)
from .figures import TOP_FEATURES, confusion
from .naming import CLASS_NAMES
from .subgroup import subgroup_blocks
from .summary import plain_summary
from .views import Importance

DECISION_HOW = ("The thresholds for a target sensitivity (sens95, sens98) and the recalibration were chosen inside each "
                "training fold, on out-of-fold predictions of its own training patients (an inner cross-validation), "
                "then judged on the held-out fold: the same procedure `fit` runs on all patients.")


def patient_link(patient_id: str, shown: set[str]):
    """A patient's ID, linked to their page when the report has one."""
    return Link(patient_id, f"patients/{patient_id}.html") if patient_id in shown else patient_id


def metric_card(label: str, full, clinical, interval: Interval) -> Card:
    return Card(label, str(full), f"95% CI {interval}; clinical only: {clinical} ({full.mean - clinical.mean:+.3f})")


def performance(saved: SavedCV, figures: dict, shown: set[str], intervals: dict) -> Section:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    f, c = full.summary, clinical.summary
    mean = full.mean_probability
    order = np.argsort(-mean, kind="stable")
    wrong = [i for i in order if decide(mean[i]) != full.labels[i]]
    matrix = confusion(full.labels, mean)
    repeats = saved.comparison.design.repeats
    return Section("performance", "Performance", [
        Cards([metric_card("balanced accuracy (images + clinical)", f.balanced_accuracy, c.balanced_accuracy,
                           intervals["full"]["balanced_accuracy"]),
               metric_card("ROC AUC (images + clinical)", f.roc_auc, c.roc_auc, intervals["full"]["roc_auc"])]),
        Paragraph([f"Mean ± standard deviation over the {repeats} repeats, and a 95% confidence interval from 1,000 "
                   "bootstrap resamples of the patients (within each class); both models on the very same folds, so the "
                   "difference is what the cell images add."], muted=True),
        Columns([
            [Image(figures["metrics"], "per-repeat metrics", "Each dot is one repeat of the whole cross-validation."),
             Image(figures["confusion"], "confusion matrices", f"Patients classified by their mean out-of-fold probability "
                   f"at p ≥ {THRESHOLD}. Averaging the repeats acts as an ensemble, so this balanced accuracy can exceed "
                   "the per-repeat mean above.")],
            [Image(figures["roc"], "ROC curves", f"Per-repeat ROC curves averaged vertically; band ±1 std; dot: operating "
                   f"point at p ≥ {THRESHOLD}, averaged over repeats."),
             Table(["images + clinical", "predicted reactive", "predicted tumoral"],
                   [["reactive", str(matrix[0, 0]), str(matrix[0, 1])], ["tumoral", str(matrix[1, 0]), str(matrix[1, 1])]],
                   numeric=(1, 2))],
            [Heading(f"Misclassified patients ({len(wrong)})"),
             Paragraph([part for k, i in enumerate(wrong) for part in
                        ((", " if k else ""), patient_link(full.ids[i], shown),
                         f" ({CLASS_NAMES[int(full.labels[i])]}, p {mean[i]:.2f})")] or ["none"])],
            [Image(figures["calibration"], "calibration", "Training weighs both classes equally (the threshold targets "
                   "balanced accuracy), so probabilities need not match the observed tumoral fraction of a cohort that is "
                   "mostly tumoral. Numbers: patients in each bin.")],
        ], layout="grid2"),
    ])


def shap_table(frame: pd.DataFrame, first: str) -> Table:
    return Table([first, "features", "mean |SHAP|"],
                 [[r.name, str(r.n_features), plus_minus(r.mean_abs_shap, r.std)] for r in frame.itertuples()],
                 numeric=(1, 2))


def feature_importance_section(importance: Importance, figures: dict) -> Section:
    top = importance.features.sort_values("mean_abs_shap", ascending=False).head(TOP_FEATURES)
    tables = [Heading("By source"), shap_table(importance.sources, "source")]
    if len(importance.backbones) > 2:  # clinical + more than one embeddings file
        tables += [Heading("By embeddings file"), shap_table(importance.backbones, "backbone")]
    if importance.families_differ_from_features:  # else the same rows as the top features
        tables += [Heading("By family"), shap_table(importance.families, "family")]
    return Section("feature-importance", "Feature importance", [
        Paragraph(["SHAP values are LightGBM's exact tree contributions (", Code("pred_contrib"), ") computed on each "
                   "fold's held-out patients, in log-odds; a family's value is the sum over its features for a patient. "
                   "Gain is each fold model's total split gain per feature as a share of the model's total, over "
                   f"{importance.n_fold_models} fold models."], muted=True),
        Columns([
            *([[Image(figures["families"], "SHAP by family", "Mean |SHAP| per family on held-out patients: the "
                      "dimensions of an embedding statistic pooled.", 560)]] if "families" in figures else []),
            [Image(figures["gain"], "LightGBM gain", "Gain (not split counts): how much each feature improved the "
                   "training loss.", 560)],
            [Image(figures["shap_top"], "top features by SHAP", "Left: mean |SHAP| ± std over repeats. Right: each "
                   "patient’s SHAP value (averaged over repeats), red = high feature value.", 1100)],
        ]),
        Columns([tables, [Heading(f"Top {len(top)} features"), Table(
            ["feature", "column", "mean |SHAP|", "share of gain"],
            [[r.name, Code(r.column), plus_minus(r.mean_abs_shap, r.shap_std),
              plus_minus(100 * r.gain_share, 100 * r.gain_std, 1, "%")] for r in top.itertuples()], numeric=(2, 3))]]),
    ])


def patients_section(saved: SavedCV, shown: set[str], n_missing: int) -> Section:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    mean = full.mean_probability
    order = np.argsort(-mean, kind="stable")
    table = Table(["patient", "true class", "P(tumoral) ± std", "clinical only", ""], [
        [patient_link(full.ids[i], shown), CLASS_NAMES[int(full.labels[i])],
         plus_minus(mean[i], full.probabilities[:, i].std(), 2), f"{clinical.mean_probability[i]:.2f}",
         Mark("correct", "ok") if decide(mean[i]) == full.labels[i] else Mark("wrong", "bad")] for i in order],
        numeric=(2, 3), scroll=True)
    note = ("Each linked patient has a page: the out-of-fold call, the features that push it in words, and the cells "
            "with the highest and lowest cell score." if shown else
            "No per-patient pages in this report (--patients none).")
    blocks = [Paragraph([f"Every labelled patient by out-of-fold probability of tumoral (mean ± std over repeats). {note}"],
                        muted=True), table]
    if n_missing:
        blocks.insert(1, Paragraph([Mark(f"{n_missing} cell images could not be read; a note stands in for each.", "bad")]))
    return Section("patients", "Per patient", blocks)


def provenance_rows(saved: SavedCV, cohort: Cohort, context: dict) -> list[tuple[str, str]]:
    rows = []
    for feature_set in cohort.sets:
        prov, tag = feature_set.provenance, "" if len(cohort.sets) == 1 else f" [{feature_set.name}]"
        try:
            preprocessing = json.dumps(json.loads(prov.get("preprocessing", "")), sort_keys=True)
        except (TypeError, ValueError):
            preprocessing = prov.get("preprocessing", "")
        rows += [
            (f"embeddings file{tag}", str(feature_set.path.resolve())),
            (f"embedding model{tag}", prov.get("model")),
            (f"weights source{tag}", prov.get("weights_source")),
            (f"weights sha256{tag}", prov.get("weights_sha256")),
            (f"weights file sha256{tag}", prov.get("weights_file_sha256") or "not recorded"),
            (f"preprocessing{tag}", preprocessing),
            (f"test-time augmentation{tag}", prov.get("tta")),
            (f"precision / stored dtype{tag}", f"{prov.get('precision')} / {prov.get('dtype')}"),
            (f"embeddings created{tag}", prov.get("created")),
            (f"extraction versions{tag}", f"tool {prov.get('tool_version')}, timm {prov.get('timm_version')}, "
                                          f"torch {prov.get('torch_version')}, device {prov.get('device')}"),
            (f"images embedded / skipped{tag}", f"{prov.get('n_images')} / {prov.get('n_skipped')}"),
        ]
    design, settings = saved.comparison.design, saved.settings
    rows += [
        ("dataset root", str(cohort.dataset_root)),
        ("settings source", settings.source),
        ("feature specification", json.dumps(settings.spec.to_dict(), sort_keys=True)),
        ("LightGBM parameters", json.dumps(settings.params, sort_keys=True)),
        ("cross-validation", f"{design.folds}-fold stratified by patient x {design.repeats} repeats, seed {design.seed}; "
                             f"decision threshold {THRESHOLD}; results of {saved.info.get('created')}"),
        ("report date", context["date"]),
        ("tool version", f"lymphocytosis {__version__}"),
        ("build time", f"{context['seconds']:.0f} s (cross-validation {saved.info.get('seconds', 0):.0f} s)"),
    ]
    return [(k, "" if v is None else str(v)) for k, v in rows]


def report_document(saved: SavedCV, cohort: Cohort, importance: Importance, figures: dict, shown: set[str],
                    n_missing: int, context: dict, intervals: dict, banner: str | None,
                    stained: SavedCV | None = None, decision: dict | None = None) -> Document:
    design = saved.comparison.design
    full = saved.comparison.full
    performance_section = performance(saved, figures, shown, intervals)
    performance_section.blocks[2:2] = subgroup_blocks(saved, cohort, stained)  # after the overall cards
    provenance = Table(["", ""], [[k, Code(v)] for k, v in provenance_rows(saved, cohort, context)], row_headers=True)
    return Document(
        title="Tumoral vs reactive lymphocytosis: classifier report",
        lede=Paragraph([f"{len(full.ids)} labelled patients ({saved.comparison.n_tumoral} tumoral), {design.folds}-fold "
                        f"stratified cross-validation by patient x {design.repeats} repeats (seed {design.seed}). Every "
                        "number and picture below is out-of-fold: each patient is scored and explained only by models "
                        "that never saw it."]),
        nav=[Link("In short", "#summary"), Link("Performance", "#performance"),
             *([Link("Decision", "#decision")] if decision is not None else []),
             Link("Feature importance", "#feature-importance"), Link("Per patient", "#patients"),
             Link("Provenance", "#provenance"), Link("summary.md", "summary.md"), Link("patients.csv", "patients.csv")],
        sections=[Section("summary", "In short", plain_summary(saved, intervals)), performance_section,
                  *([decision_section(decision, figures, DECISION_HOW)] if decision is not None else []),
                  feature_importance_section(importance, figures),
                  patients_section(saved, shown, n_missing), Section("provenance", "Provenance", [provenance])],
        banner=banner,
    )
