"""The report's "From probability to decision" section: operating points, calibration, decision curve.

Built from the dictionary of `decision_results.judged` (a cross-validation) or of `external.evaluate` (a saved
model on another cohort): both have the same keys, so the CV report and the evaluation report say it alike.
"""

from __future__ import annotations

from pathlib import Path

from ..metrics import Estimate
from . import figures as fig
from .document import Columns, Image, Paragraph, Section, Table

POINT_WORDS = {"balanced": "balanced (p ≥ 0.5)"}


def estimate(values: dict) -> str:
    return str(Estimate(**values))


def operating_table(result: dict) -> Table:
    given = result["prevalence"]["given"]
    varies = any(p["threshold"]["min"] != p["threshold"]["max"] for p in result["operating_points"].values())
    header = ["operating point", "threshold (median, range over folds)" if varies else "threshold", "sensitivity",
              "specificity = reactive spared",
              "sent to cytometry", "PPV", "NPV"] + ([f"PPV at {given:.2f}", f"NPV at {given:.2f}"] if given is not None else [])
    rows = []
    for name, point in result["operating_points"].items():
        threshold = point["threshold"]
        spread = (f"{threshold['median']:.3f} ({threshold['min']:.3f}–{threshold['max']:.3f})"
                  if threshold["min"] != threshold["max"] else f"{threshold['median']:.3f}")
        keys = ["sensitivity", "specificity", "sent_to_cytometry", "ppv", "npv"]
        keys += ["ppv_at_prevalence", "npv_at_prevalence"] if given is not None else []
        rows.append([POINT_WORDS.get(name, name), spread, *(estimate(point[k]) for k in keys)])
    return Table(header, rows, numeric=tuple(range(1, len(header))))


def calibration_table(result: dict) -> Table:
    calibration = result["calibration"]
    rows = [[name, estimate(calibration[key]["brier"]), estimate(calibration[key]["ece"])]
            for key, name in (("raw", "as trained"), ("recalibrated", "recalibrated")) if key in calibration]
    return Table(["probabilities", "Brier score", "expected calibration error"], rows, numeric=(1, 2))


def reliability_table(result: dict) -> Table:
    tables = result["calibration"]["reliability"]
    names = list(tables)
    rows = []
    for k, first in enumerate(tables[names[0]]):
        row = [f"{first['low']:.1f}–{first['high']:.1f}"]
        for name in names:
            entry = tables[name][k]
            row.append("–" if entry["mean_probability"] is None else
                       f"{entry['count']:.1f}: {entry['fraction_tumoral']:.2f} tumoral")
        rows.append(row)
    return Table(["probability bin", *(f"{n}: patients, observed" for n in names)], rows, numeric=tuple(range(1, len(names) + 1)))


def draw(result: dict, figures_dir: Path, where: str) -> dict:
    figures_dir.mkdir(parents=True, exist_ok=True)
    return {"decision_curve": fig.figure_decision_curve(result["decision_curve"], figures_dir / "decision_curve.png",
                                                        f"Decision curve, {where}"),
            "reliability": fig.figure_reliability(result["calibration"]["reliability"], figures_dir / "reliability.png",
                                                  f"Reliability, {where} (numbers: patients per bin)")}


def decision_section(result: dict, figures: dict, how: str) -> Section:
    """`how` says in one sentence where the thresholds and recalibration came from and what they were judged on."""
    prevalence = result["prevalence"]["cohort"]
    methods = result["calibration"].get("methods", {})
    chosen = ", ".join(f"{m} in {n}" for m, n in methods.items())
    recalibrated = "recalibrated" in result["calibration"]
    curve_note = ("The raw probability is pulled towards 0.5 by training; read the recalibrated curve." if recalibrated
                  else "This model carries no recalibration: its raw probability is the curve to read.")
    return Section("decision", "From probability to decision", [
        Paragraph([f"{how} Each value with its 95% bootstrap interval over patients. A patient is sent to cytometry "
                   f"when his probability reaches the threshold; PPV and NPV at this cohort's prevalence "
                   f"({prevalence:.2f}) unless another is named."], muted=True),
        operating_table(result),
        Paragraph(["Calibration: are the probabilities risks? Brier score (mean squared error of the probability) and "
                   "expected calibration error (the gap between predicted and observed tumoral fraction, averaged over "
                   "10 bins), before and after the recalibration fitted on out-of-fold predictions of training patients"
                   + (f" (chosen per fold: {chosen})." if len(methods) > 1 or sum(methods.values()) > 1 else
                      f" ({chosen})." if chosen else " (none: it did not lower the cross-validated Brier score).")
                   + " The thresholds stay on the raw probability, so recalibration changes no decision."], muted=True),
        calibration_table(result),
        Columns([[Image(figures["reliability"], "reliability diagram", "Observed fraction tumoral per bin of predicted "
                        "probability; numbers: patients in the bin (per repeat of a cross-validation).")],
                 [Image(figures["decision_curve"], "decision curve", "Net benefit of acting on each model's probability, "
                        "against sending everyone or no one to cytometry: the higher curve is the better strategy at "
                        f"that threshold. {curve_note}")]], layout="grid2"),
        reliability_table(result),
    ])
