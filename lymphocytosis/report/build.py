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
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError
from ..files import MANIFEST, atomic_directory
from ..metrics import bootstrap_intervals, decide
from ..model.cohort import Cohort
from ..model.decision_results import judged
from ..model.explanations import Explanations
from ..model.results import SavedCV
from ..progress import Progress
from . import figures as fig
from .content import report_document
from .decision_section import draw as draw_decision
from .headline import Honesty
from .importance import backbone_importance, family_importance, feature_importance, several_backbones, source_importance
from .naming import COUNT_UNIT, format_value, readable_name
from .patient_page import patient_document
from .render_html import render_html
from .render_markdown import render_markdown
from .thumbnails import patient_cells
from .views import Importance, PatientView

log = logging.getLogger(__name__)

PUSHES_PER_SIDE = 4
REPORT_ENTRIES = {"index.html", "summary.md", "patients.csv", "figures", "cells", "patients"}
MARKER = ".lymphocytosis-report"  # written in every report folder: what may be replaced by the next one


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


def prepare_out_dir(out_dir: Path) -> Path:
    """The report folder. An existing one is replaced (the new report is built beside it and swapped in whole, so
    no stale thumbnail survives) only when it is empty or an earlier report of this tool -- it carries MARKER and
    nothing else -- never a folder that merely holds files of the same names."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out-dir {out_dir}: exists and is not a folder")
        entries = {p.name for p in out_dir.iterdir()} - {MANIFEST}  # the manifest: files.require_own_folder
        if entries and (MARKER not in entries or entries - REPORT_ENTRIES - {MARKER}):
            other = sorted(entries - REPORT_ENTRIES - {MARKER}) or sorted(entries)
            raise InputError(f"--out-dir {out_dir}: not an earlier report of this tool (holds {other[0]}, ...); "
                             "choose an empty or new folder")
    return out_dir


def importance_of(ex: Explanations) -> Importance:
    return Importance(family_importance(ex), source_importance(ex), backbone_importance(ex), feature_importance(ex),
                      len(ex.gain_share))


def draw_figures(saved: SavedCV, ex: Explanations, importance: Importance, figures_dir: Path) -> dict:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "metrics": fig.figure_metrics(full, clinical, figures_dir / "metrics.png"),
        "roc": fig.figure_roc(full, clinical, figures_dir / "roc.png"),
        "confusion": fig.figure_confusion(full, clinical, figures_dir / "confusion.png"),
        "calibration": fig.figure_calibration(full, clinical, figures_dir / "calibration.png"),
        "gain": fig.figure_gain(importance.features, importance.n_fold_models, figures_dir / "gain.png"),
        "shap_top": fig.figure_shap_top(ex, importance.features, figures_dir / "shap_top.png"),
    }
    if importance.families_differ_from_features:  # else the same bars as the top features again
        figures["families"] = fig.figure_families(importance.families, figures_dir / "shap_families.png")
    return figures


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
        clinical=f"age {row['age']:.0f} years, {'male' if row['sex_male'] >= 0.5 else 'female'}, "
                 f"lymphocyte count {row['lymph_count']:.3g} {COUNT_UNIT}",
        n_cells=len(cohort.primary.bags[patient_id]), base=float(contributions[-1]), logit=float(contributions.sum()),
        up=described([j for j in order[:PUSHES_PER_SIDE] if contributions[j] >= 0.005]),  # below display precision: noise
        down=described([j for j in order[::-1][:PUSHES_PER_SIDE] if contributions[j] <= -0.005]),
        cells=None if scores is None else patient_cells(cohort, patient_id, scores, out_dir),
        median_cell_score=None if scores is None or not len(scores) else float(np.median(scores)),
    )


def patients_table(saved: SavedCV) -> pd.DataFrame:
    full, clinical = saved.comparison.full, saved.comparison.clinical
    return pd.DataFrame({  # the column names of predictions.csv, which this extends
        "ID": full.ids, "LABEL": full.labels, "PROBABILITY": full.mean_probability.round(4),
        "PROBABILITY_STD": full.probabilities.std(0).round(4), "PREDICTED": decide(full.mean_probability),
        "CLINICAL_ONLY_PROBABILITY": clinical.mean_probability.round(4),
    })


def synthetic_banner(cohort: Cohort) -> str | None:
    """Data made by lymphocytosis.synthetic says so in its README: such a report must not pass for a real one."""
    readme = Path(cohort.dataset_root) / "README.md"
    try:
        synthetic = readme.read_text(encoding="utf-8", errors="replace").lstrip().upper().startswith("SYNTHETIC")
    except OSError:
        synthetic = False
    return ("SYNTHETIC DATA: drawn cells and made-up clinical values, for trying the tool out. Nothing here is about "
            "patients.") if synthetic else None


def write_patient_pages(out_dir: Path, views: list[PatientView], cell_note: str, banner: str | None) -> None:
    pages = out_dir / "patients"
    pages.mkdir(exist_ok=True)
    scale = max([abs(c) for v in views for _, c in (*v.up, *v.down)] or [1.0])
    for view in views:
        page = render_html(patient_document(view, scale, cell_note, banner))
        (pages / f"{view.patient_id}.html").write_text(page, encoding="utf-8")


def build_report(saved: SavedCV, cohort: Cohort, out_dir: Path, patients: list[str],
                 stained: SavedCV | None = None, prevalence: float | None = None,
                 progress: Progress = Progress(), honesty: Honesty | None = None) -> Path:
    """Write the report folder from saved CV results (built beside it, then swapped in); returns it. `stained`, when
    given, is the same settings' CV on stain-normalised embeddings: one sentence on what survives stain normalisation.
    `honesty` is required when the settings were tuned on these patients (what the headline sets beside the CV)."""
    if saved.settings.tuned and honesty is None:
        raise ValueError("a report of tuned settings needs the default settings' CV (Honesty): its headline would overstate")
    with atomic_directory(out_dir, kind="report") as tmp:
        write_report(saved, cohort, tmp, patients, stained, prevalence, progress, honesty)
    log.info("report: wrote %s", Path(out_dir) / "index.html")
    return Path(out_dir)


def write_report(saved: SavedCV, cohort: Cohort, out_dir: Path, patients: list[str], stained: SavedCV | None,
                 prevalence: float | None = None, progress: Progress = Progress(),
                 honesty: Honesty | None = None) -> None:
    started = time.perf_counter()
    ex = saved.explanations
    importance = importance_of(ex)
    figures = draw_figures(saved, ex, importance, out_dir / "figures")
    decision = judged(saved.decisions, saved.comparison, prevalence) if saved.decisions is not None else None
    if decision is not None:
        figures.update(draw_decision(decision, out_dir / "figures", "out-of-fold"))
    log.info("report: explanations and figures in %.1f s", time.perf_counter() - started)
    with progress.bar(total=len(patients), desc="report: patients", unit="patient") as bar:
        views = []
        for patient_id in patients:
            views.append(patient_view(saved, cohort, patient_id, out_dir))
            bar.update(1)
    problems = [p for v in views if v.cells for p in v.cells.problems]
    if problems:
        log.warning("report: %d cell images could not be read (first: %s); a note stands in for each thumbnail",
                    len(problems), problems[0])
    patients_table(saved).to_csv(out_dir / "patients.csv", index=False)
    cell_note = "" if ex.cell_scores else "no per-cell score in this feature specification (cell_score off): no cells to rank"
    banner = synthetic_banner(cohort)
    write_patient_pages(out_dir, views, cell_note, banner)
    context = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "seconds": time.perf_counter() - started}
    full, clinical = saved.comparison.full, saved.comparison.clinical
    intervals = {"full": bootstrap_intervals(full.labels, full.probabilities),
                 "clinical": bootstrap_intervals(clinical.labels, clinical.probabilities)}
    document = report_document(saved, cohort, importance, figures, {v.patient_id for v in views}, len(problems), context,
                               intervals, banner, stained, decision, honesty)
    (out_dir / "summary.md").write_text(render_markdown(document), encoding="utf-8")
    (out_dir / "index.html").write_text(render_html(document), encoding="utf-8")
    (out_dir / MARKER).write_text(f"lymphocytosis report {__version__}\n", encoding="utf-8")
    log.info("report: built in %.1f s", time.perf_counter() - started)
