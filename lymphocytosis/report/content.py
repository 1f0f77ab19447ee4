"""What the report says: the sections of the document, from saved CV results and what was drawn from them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import __version__
from ..metrics import THRESHOLD, decide, plus_minus
from ..model.cohort import Cohort
from ..model.results import SavedCV
from .document import (
    Bar,
    Bars,
    Card,
    Cards,
    Code,
    Columns,
    Document,
    Gallery,
    GalleryItem,
    Heading,
    Image,
    Link,
    Mark,
    Panel,
    Paragraph,
    Section,
    Table,
)
from .figures import TOP_FEATURES, confusion
from .naming import CLASS_NAMES
from .subgroup import subgroup_blocks
from .thumbnails import CellGallery


@dataclass
class Importance:
    families: pd.DataFrame
    sources: pd.DataFrame
    backbones: pd.DataFrame
    features: pd.DataFrame
    n_fold_models: int


@dataclass
class PatientView:
    patient_id: str
    label: int
    probability: float
    spread: float
    clinical_probability: float
    clinical: str  # "age 71, male, lymphocyte count 12.4"
    n_cells: int
    base: float
    logit: float  # base + every feature's contribution
    up: list[tuple[str, float]]  # ("feature = value", contribution)
    down: list[tuple[str, float]]
    cells: CellGallery | None

    @property
    def predicted(self) -> int:
        return int(decide(self.probability))

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


def patient_link(patient_id: str, shown: set[str]):
    return Link(patient_id, f"#patient-{patient_id}") if patient_id in shown else patient_id


def performance(saved: SavedCV, figures: dict, shown: set[str]) -> Section:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    f, c = full.summary, clinical.summary
    mean = full.mean_probability
    order = np.argsort(-mean, kind="stable")
    wrong = [i for i in order if decide(mean[i]) != full.labels[i]]
    matrix = confusion(full.labels, mean)
    patients = Table(["patient", "true class", "P(tumoral) ± std", "clinical only", ""], [
        [patient_link(full.ids[i], shown), CLASS_NAMES[int(full.labels[i])],
         plus_minus(mean[i], full.probabilities[:, i].std(), 2), f"{clinical.mean_probability[i]:.2f}",
         Mark("correct", "ok") if decide(mean[i]) == full.labels[i] else Mark("wrong", "bad")] for i in order],
        numeric=(2, 3), scroll=True)
    repeats = saved.comparison.design.repeats
    return Section("performance", "Performance", [
        Cards([Card("balanced accuracy (images + clinical)", str(f.balanced_accuracy),
                    f"clinical only: {c.balanced_accuracy} ({f.balanced_accuracy.mean - c.balanced_accuracy.mean:+.3f})"),
               Card("ROC AUC (images + clinical)", str(f.roc_auc),
                    f"clinical only: {c.roc_auc} ({f.roc_auc.mean - c.roc_auc.mean:+.3f})")]),
        Paragraph([f"Mean ± standard deviation over the {repeats} repeats; both models on the very same folds, so the "
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
                         f" ({CLASS_NAMES[int(full.labels[i])]}, p {mean[i]:.2f})")] or ["none"]),
             Heading("Every patient, by out-of-fold probability"), patients],
            [Image(figures["calibration"], "calibration", "Training weighs both classes equally (the threshold targets "
                   "balanced accuracy), so probabilities need not match the observed tumoral fraction of a cohort that is "
                   "mostly tumoral.")],
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
    tables += [Heading("By family"), shap_table(importance.families, "family")]
    return Section("feature-importance", "Feature importance", [
        Paragraph(["SHAP values are LightGBM's exact tree contributions (", Code("pred_contrib"), ") computed on each "
                   "fold's held-out patients, in log-odds; a family's value is the sum over its features for a patient. "
                   "Gain is each fold model's total split gain per feature as a share of the model's total, over "
                   f"{importance.n_fold_models} fold models."], muted=True),
        Columns([
            [Image(figures["families"], "SHAP by family", "Mean |SHAP| per family on held-out patients.", 560)],
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


def patient_panel(view: PatientView, scale: float, cell_note: str) -> Panel:
    verdict = Mark("correct", "ok") if view.correct else Mark(f"wrong: predicted {CLASS_NAMES[view.predicted]}", "bad")
    pushes = [Bars("towards tumoral", [Bar(n, c, abs(c) / scale) for n, c in view.up], True),
              Bars("towards reactive", [Bar(n, c, abs(c) / scale) for n, c in view.down], False)]
    if view.cells is None:
        cells = [Paragraph([cell_note], muted=True)]
    else:
        cells = [Gallery(title, [GalleryItem(c.src, c.file, f"{c.score:+.2f}", c.problem) for c in items])
                 for title, items in (("most tumoral-looking (highest cell score)", view.cells.top),
                                      ("least tumoral-looking (lowest)", view.cells.bottom))]
    return Panel(f"patient-{view.patient_id}", f"{view.patient_id}: {CLASS_NAMES[view.label]} (label {view.label}), "
                 f"P(tumoral) = {plus_minus(view.probability, view.spread, 2)}", [
                     Paragraph([verdict]),
                     Paragraph([f"{view.clinical}, {view.n_cells} cells; clinical-only model P(tumoral) = "
                                f"{view.clinical_probability:.2f}. SHAP in log-odds from base {view.base:+.2f}, averaged "
                                f"over repeats to {view.logit:+.2f} in all."], muted=True),
                     Columns([pushes, cells]),
                 ], highlight=not view.correct)


def patients_section(views: list[PatientView], cell_note: str, n_missing: int) -> Section:
    scale = max([abs(c) for v in views for _, c in (*v.up, *v.down)] or [1.0])
    blocks = [Paragraph(["Out-of-fold probability (mean ± std over repeats) and label; the features that push the "
                         "prediction up (towards tumoral) and down, from SHAP on the held-out folds averaged over repeats; "
                         "and the cells with the highest and lowest held-out \"tumoral\" cell score (score under each "
                         "thumbnail; the thumbnail is the centre crop that was embedded). Misclassified patients have an "
                         "orange frame."], muted=True)]
    if n_missing:
        blocks.append(Paragraph([Mark(f"{n_missing} cell images could not be read; a note stands in for each.", "bad")]))
    if not views:
        blocks.append(Paragraph(["No per-patient views requested (", Code("--patients none"), ")."], muted=True))
    blocks += [patient_panel(v, scale, cell_note) for v in views]
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


def report_document(saved: SavedCV, cohort: Cohort, importance: Importance, figures: dict, views: list[PatientView],
                    cell_note: str, n_missing: int, context: dict, stained: SavedCV | None = None) -> Document:
    design = saved.comparison.design
    full = saved.comparison.full
    shown = {v.patient_id for v in views}
    performance_section = performance(saved, figures, shown)
    performance_section.blocks[2:2] = subgroup_blocks(saved, cohort, stained)  # after the overall cards
    provenance = Table(["", ""], [[k, Code(v)] for k, v in provenance_rows(saved, cohort, context)], row_headers=True)
    return Document(
        title="Tumoral vs reactive lymphocytosis: classifier report",
        lede=Paragraph([f"{len(full.ids)} labelled patients ({saved.comparison.n_tumoral} tumoral), {design.folds}-fold "
                        f"stratified cross-validation by patient x {design.repeats} repeats (seed {design.seed}). Every "
                        "number and picture below is out-of-fold: each patient is scored and explained only by models "
                        "that never saw it."]),
        nav=[Link("Performance", "#performance"), Link("Feature importance", "#feature-importance"),
             Link("Per patient", "#patients"), Link("Provenance", "#provenance"), Link("summary.md", "summary.md"),
             Link("patients.csv", "patients.csv")],
        sections=[performance_section, feature_importance_section(importance, figures),
                  patients_section(views, cell_note, n_missing), Section("provenance", "Provenance", [provenance])],
    )
