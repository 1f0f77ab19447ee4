"""The folder `evaluate` writes: a saved model judged on another labelled cohort.

    <out>/results.json         everything below, with intervals, the model and cohort it was computed on
    <out>/patients.csv         per patient: label, probability (recalibrated too), decision at each operating point
    <out>/operating_points.csv, calibration.csv, reliability.csv, decision_curve.csv
    <out>/index.html, summary.md, figures/   the report, in the style of the CV report

Built beside the target and swapped in whole; an existing folder is replaced only when it is empty or an earlier
evaluation (it carries MARKER and nothing else, and its manifest lists everything in it: files.require_own_folder).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd

from .. import __version__
from ..errors import InputError
from ..files import MANIFEST, atomic_directory
from ..metrics import Estimate
from .decision_section import decision_section, draw
from .document import Card, Cards, Code, Document, Link, Paragraph, Section, Table
from .render_html import render_html
from .render_markdown import render_markdown

MARKER = ".lymphocytosis-evaluation"
ENTRIES = {"results.json", "patients.csv", "operating_points.csv", "calibration.csv", "reliability.csv",
           "decision_curve.csv", "index.html", "summary.md", "figures", MARKER}


def check_out_dir(out_dir: Path) -> None:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir}: exists and is not a folder")
    if out_dir.is_dir():
        entries = {p.name for p in out_dir.iterdir()} - {MANIFEST}  # the manifest: files.require_own_folder
        if entries and (MARKER not in entries or entries - ENTRIES):
            other = sorted(entries - ENTRIES) or sorted(entries)
            raise InputError(f"--out-dir {out_dir}: not an earlier evaluation of this tool (holds {other[0]}, ...); "
                             "choose an empty or new folder")
    # What lies deeper down was checked with the other outputs (output_kinds.require_own_outputs, the manifest).


def tables(results: dict) -> dict[str, pd.DataFrame]:
    judged = results["judged"]
    points = pd.DataFrame([{"operating_point": name, "threshold": point["threshold"]["median"],
                            **{f"{k}{suffix}": point[k][field] for k in point if k != "threshold"
                               for suffix, field in (("", "value"), ("_low", "low"), ("_high", "high"))}}
                           for name, point in judged["operating_points"].items()])
    calibration = pd.DataFrame([{"probabilities": key, **{f"{m}{suffix}": judged["calibration"][key][m][field]
                                                          for m in ("brier", "ece")
                                                          for suffix, field in (("", "value"), ("_low", "low"),
                                                                                ("_high", "high"))}}
                                for key in ("raw", "recalibrated") if key in judged["calibration"]])
    reliability = pd.DataFrame([{"probabilities": key, **row} for key, rows in judged["calibration"]["reliability"].items()
                                for row in rows])
    return {"operating_points.csv": points, "calibration.csv": calibration, "reliability.csv": reliability,
            "decision_curve.csv": pd.DataFrame(judged["decision_curve"]), "patients.csv": pd.DataFrame(results["patients"])}


def drift_paragraph(drift: dict | None) -> Paragraph:
    """Whether this cohort looks like the model's training cohort (drift/): a number on another kind of images is
    read with that in mind."""
    if drift is None:
        return Paragraph(["Drift: not checked."], muted=True)
    notes = "".join(f" ({note})" for note in drift["notes"]) if drift["cohort_out"] is not None else ""
    return Paragraph([f"Drift check against the model's training cohort: {drift['verdict'].removeprefix('cohort: ')}"
                      f"{notes}. Per patient: DISTRIBUTION and DRIFT_REASON in patients.csv."])


def evaluation_document(results: dict, figures: dict) -> Document:
    head, clinical = results["headline"], results["clinical_only"]
    cohort, model = results["cohort"], results["model"]
    cards = [Card("balanced accuracy (p ≥ 0.5)", str(Estimate(**head["balanced_accuracy"])),
                  "95% bootstrap interval over patients" + (f"; clinical only, cross-validated within this cohort: "
                                                            f"{Estimate(**clinical['balanced_accuracy'])}" if clinical else "")),
             Card("ROC AUC", str(Estimate(**head["roc_auc"])), "95% bootstrap interval over patients")]
    how = ("The model's own thresholds and recalibration, as saved by `fit` (chosen on its training patients), applied "
           "unchanged to this cohort, which it never saw." + ("" if results["clinical_only"] else
                                                              " Too few patients of a class for a clinical-only reference."))
    provenance = [["model", Code(model["dir"])], ["model trained on", Code(f"{model['n_training_patients']} patients")],
                  ["cohort", Code(cohort["embeddings"])], ["dataset", Code(cohort["dataset_root"])],
                  ["created", Code(results["created"])], ["tool version", Code(__version__)],
                  ["command", Code(results["command"])]]
    return Document(
        title="External validation: a saved model on a new labelled cohort",
        lede=Paragraph([f"{cohort['n_patients']} labelled patients ({cohort['n_tumoral']} tumoral), none of them in the "
                        f"model's training set (checked by ID and by cell images). Every number is the saved model as "
                        "is: nothing was refitted on this cohort."]),
        nav=[Link("Performance", "#performance"), Link("Decision", "#decision"), Link("Provenance", "#provenance"),
             Link("summary.md", "summary.md"), Link("patients.csv", "patients.csv"), Link("results.json", "results.json")],
        sections=[Section("performance", "Performance", [Cards(cards), drift_paragraph(results.get("drift"))]),
                  decision_section(results["judged"], figures, how),
                  Section("provenance", "Provenance", [Table(["", ""], provenance, row_headers=True)])],
    )


def plain_json(value):
    """NaN (an undefined PPV, say) as null: results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_evaluation(out_dir: Path, results: dict) -> Path:
    """The results folder and report (see the module's docstring), atomically."""
    results = {**results, "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "tool_version": __version__}
    with atomic_directory(out_dir, kind="evaluation") as tmp:
        figures = draw(results["judged"], tmp / "figures", "this cohort")
        for name, frame in tables(results).items():
            frame.to_csv(tmp / name, index=False)
        (tmp / "results.json").write_text(json.dumps(plain_json({k: v for k, v in results.items() if k != "patients"}),
                                                      indent=1, allow_nan=False))
        document = evaluation_document(results, figures)
        (tmp / "summary.md").write_text(render_markdown(document), encoding="utf-8")
        (tmp / "index.html").write_text(render_html(document), encoding="utf-8")
        (tmp / MARKER).write_text(f"lymphocytosis evaluation {__version__}\n", encoding="utf-8")
    return Path(out_dir)
