"""`model.py report`: the report folder, from saved cross-validation results.

    index.html      the report (self-contained: relative links only)
    summary.md      the same document in Markdown
    patients.csv    per-patient out-of-fold probabilities (full and clinical-only models)
    figures/*.png   metrics, ROC, confusion matrices, calibration, gain, SHAP
    cells/<ID>/*.jpg  small thumbnails of each patient's highest- and lowest-scoring cells

index.html is written last, so a folder with an index.html is a finished report.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..defaults import ARTIFACTS
from ..errors import InputError
from ..files import atomic_write_text
from ..metrics import decide
from ..model.cohort import Cohort
from ..model.explanations import Explanations
from ..model.results import SavedCV
from . import figures as fig
from .content import Importance, PatientView, report_document
from .importance import backbone_importance, family_importance, feature_importance, several_backbones, source_importance
from .naming import format_value, readable_name
from .render_html import render_html
from .render_markdown import render_markdown
from .thumbnails import patient_cells

log = logging.getLogger(__name__)

PUSHES_PER_SIDE = 4
REPORT_ENTRIES = {"index.html", "summary.md", "patients.csv", "figures", "cells"}


def select_patients(cohort: Cohort, choice: str) -> list[str]:
    """'all' (every labelled patient), 'none', or comma-separated IDs, checked before anything runs: only
    labelled patients have out-of-fold predictions, and a typo should not cost a minute of CV first."""
    choice = (choice or "all").strip()
    if choice.lower() == "all":
        return list(cohort.labelled_ids)
    if choice.lower() == "none":
        return []
    wanted = list(dict.fromkeys(p.strip() for p in choice.split(",") if p.strip()))
    unknown = [p for p in wanted if p not in cohort.clinical.index]
    if unknown:
        raise InputError(f"--patients: unknown patient {unknown[0]} ({len(unknown)} unknown) in {cohort.dataset_root}")
    labelled = set(cohort.labelled_ids)
    unlabelled = [p for p in wanted if p not in labelled]
    if unlabelled:
        raise InputError(f"--patients: {unlabelled[0]} has no label (LABEL -1), so no out-of-fold prediction to show; "
                         "choose labelled patients")
    return wanted


def prepare_out_dir(out_dir: Path | None) -> Path:
    """The report folder: `out_dir`, or a new artifacts/report-<date>. An existing folder is reused only when
    it holds nothing but an earlier report (whose figures and thumbnails are then removed, so no stale cell
    from another run is left beside the new page); anything else is refused rather than mixed or deleted."""
    if not out_dir:
        base = ARTIFACTS / f"report-{dt.datetime.now():%Y%m%d-%H%M%S}"
        out_dir, k = base, 1
        while out_dir.exists():
            k += 1
            out_dir = base.with_name(f"{base.name}-{k}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out-dir {out_dir}: exists and is not a folder")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in REPORT_ENTRIES and not p.name.startswith("."))
        if foreign:
            raise InputError(f"--out-dir {out_dir}: holds other files than a report ({foreign[0]}, ...); "
                             "choose an empty or new folder")
        (out_dir / "index.html").unlink(missing_ok=True)  # first: a run stopped half-way leaves no stale page
        for name in ("figures", "cells"):
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
    return out_dir


def importance_of(ex: Explanations) -> Importance:
    return Importance(family_importance(ex), source_importance(ex), backbone_importance(ex), feature_importance(ex),
                      len(ex.gain_share))


def draw_figures(saved: SavedCV, ex: Explanations, importance: Importance, figures_dir: Path) -> dict:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    figures_dir.mkdir(parents=True, exist_ok=True)
    return {
        "metrics": fig.figure_metrics(full, clinical, figures_dir / "metrics.png"),
        "roc": fig.figure_roc(full, clinical, figures_dir / "roc.png"),
        "confusion": fig.figure_confusion(full, clinical, figures_dir / "confusion.png"),
        "calibration": fig.figure_calibration(full, clinical, figures_dir / "calibration.png"),
        "gain": fig.figure_gain(importance.features, importance.n_fold_models, figures_dir / "gain.png"),
        "families": fig.figure_families(importance.families, figures_dir / "shap_families.png"),
        "shap_top": fig.figure_shap_top(ex, importance.features, figures_dir / "shap_top.png"),
    }


def patient_view(saved: SavedCV, cohort: Cohort, patient_id: str, out_dir: Path) -> PatientView:
    full, clinical, ex = saved.comparison.full, saved.comparison.clinical, saved.explanations
    i = full.ids.index(patient_id)
    contributions, values = ex.patient_shap[i], ex.patient_values[i]
    order = np.argsort(-contributions[:-1], kind="stable")
    several = several_backbones(ex)

    def described(js):
        return [(f"{readable_name(ex.columns[j], several)} = {format_value(ex.columns[j], values[j])}",
                 float(contributions[j])) for j in js]

    scores = ex.cell_scores.get(cohort.primary.name, {}).get(patient_id)
    row = cohort.clinical.loc[patient_id]
    return PatientView(
        patient_id=patient_id, label=int(full.labels[i]), probability=float(full.mean_probability[i]),
        spread=float(full.probabilities[:, i].std()), clinical_probability=float(clinical.mean_probability[i]),
        clinical=f"age {row['age']:.0f}, {'male' if row['sex_male'] >= 0.5 else 'female'}, "
                 f"lymphocyte count {row['lymph_count']:.3g}",
        n_cells=len(cohort.primary.bags[patient_id]), base=float(contributions[-1]), logit=float(contributions.sum()),
        up=described([j for j in order[:PUSHES_PER_SIDE] if contributions[j] >= 0.005]),  # below display precision: noise
        down=described([j for j in order[::-1][:PUSHES_PER_SIDE] if contributions[j] <= -0.005]),
        cells=None if scores is None else patient_cells(cohort, patient_id, scores, out_dir),
    )


def patients_table(saved: SavedCV) -> pd.DataFrame:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    return pd.DataFrame({
        "ID": full.ids, "label": full.labels, "probability": full.mean_probability.round(4),
        "probability_std": full.probabilities.std(0).round(4), "predicted": decide(full.mean_probability),
        "clinical_only_probability": clinical.mean_probability.round(4),
    })


def build_report(saved: SavedCV, cohort: Cohort, out_dir: Path, patients: list[str], stained: SavedCV | None = None) -> Path:
    """Write the report folder from saved CV results (and, when given, those of the same settings on
    stain-normalised embeddings, for one sentence on what survives stain normalisation); returns it."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    ex = saved.explanations
    importance = importance_of(ex)
    figures = draw_figures(saved, ex, importance, out_dir / "figures")
    log.info("report: explanations and figures in %.1f s", time.perf_counter() - started)
    views = [patient_view(saved, cohort, patient_id, out_dir) for patient_id in patients]
    problems = [p for v in views if v.cells for p in v.cells.problems]
    if problems:
        log.warning("report: %d cell images could not be read (first: %s); a note stands in for each thumbnail",
                    len(problems), problems[0])
    patients_table(saved).to_csv(out_dir / "patients.csv", index=False)
    cell_note = "" if ex.cell_scores else "no per-cell score in this feature specification (cell_score off): no cells to rank"
    context = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "seconds": time.perf_counter() - started}
    document = report_document(saved, cohort, importance, figures, views, cell_note, len(problems), context, stained)
    atomic_write_text(out_dir / "summary.md", render_markdown(document))
    atomic_write_text(out_dir / "index.html", render_html(document))
    log.info("report: wrote %s in %.1f s", out_dir / "index.html", time.perf_counter() - started)
    return out_dir
