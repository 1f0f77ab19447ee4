"""The report's figures (PNG, matplotlib's Agg canvas without pyplot: no global state, nothing left open)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..metrics import THRESHOLD, decide, plus_minus
from ..model.evaluation import CVResult
from ..model.explanations import Explanations
from .naming import CLASS_NAMES

TOP_FEATURES = 15
TOP_GAIN = 20
FIGURE_DPI = 110
FULL_COLOUR, CLINICAL_COLOUR = "#1f5fa8", "#d9822b"


def _new_figure(width: float, height: float, **kwargs) -> Figure:
    figure = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(figure)  # Agg without pyplot: no global state, nothing left open
    return figure


def _save(figure: Figure, path: Path) -> str:
    figure.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight", facecolor="white")
    return f"figures/{path.name}"


def figure_metrics(full: CVResult, clinical: CVResult, path: Path) -> str:
    """Per-repeat balanced accuracy and AUC of both models: the spread is visible, not only summarised."""
    figure = _new_figure(7.5, 3.4)
    axes = figure.subplots(1, 2)
    rng = np.random.default_rng(0)
    for ax, metric, title in zip(axes, ("balanced_accuracy", "roc_auc"), ("balanced accuracy", "ROC AUC")):
        for x, (result, colour) in enumerate(((full, FULL_COLOUR), (clinical, CLINICAL_COLOUR))):
            points = np.array([getattr(r, metric) for r in result.per_repeat])
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(points)), points, s=18, color=colour, alpha=0.6, zorder=2)
            ax.errorbar(x + 0.28, np.nanmean(points), yerr=np.nanstd(points), fmt="o", color="black", capsize=4, zorder=3)
            ax.annotate(plus_minus(np.nanmean(points), np.nanstd(points)).replace(" ±", "\n±"), (x + 0.34, np.nanmean(points)),
                        fontsize=8, va="center")
        ax.set_xticks([0, 1], ["images +\nclinical", "clinical\nonly"])
        ax.set_xlim(-0.5, 1.9)
        ax.set_ylabel(title)
        ax.set_title(f"{title} per repeat")
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(f"Cross-validated metrics, {len(full.per_repeat)} repeats (dots), mean ± std (black)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _roc_band(result: CVResult, grid: np.ndarray):
    from sklearn.metrics import roc_curve

    curves, points = [], []
    for probabilities in result.probabilities:
        fpr, tpr, _ = roc_curve(result.labels, probabilities)
        curves.append(np.interp(grid, fpr, tpr))
        curves[-1][0] = 0.0
        predicted = decide(probabilities).astype(bool)
        positives, negatives = result.labels == 1, result.labels == 0
        points.append((predicted[negatives].mean() if negatives.any() else np.nan,
                       predicted[positives].mean() if positives.any() else np.nan))
    curves = np.array(curves)
    return curves.mean(0), curves.std(0), np.nanmean(points, axis=0)


def figure_roc(full: CVResult, clinical: CVResult, path: Path) -> str:
    """Vertical average of the per-repeat out-of-fold ROC curves, with the ±1 std band and the operating
    point at THRESHOLD, so the curve and the balanced accuracy can be read together."""
    grid = np.linspace(0, 1, 201)
    figure = _new_figure(5.2, 5.0)
    ax = figure.subplots()
    for result, colour, name in ((full, FULL_COLOUR, "images + clinical"), (clinical, CLINICAL_COLOUR, "clinical only")):
        mean, std, point = _roc_band(result, grid)
        ax.plot(grid, mean, color=colour, lw=2, label=f"{name}: AUC {result.summary.roc_auc}")
        ax.fill_between(grid, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=colour, alpha=0.15)
        ax.plot(*point, "o", color=colour, markeredgecolor="black", ms=7)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.plot([], [], "o", color="white", markeredgecolor="black", label=f"operating point (p ≥ {THRESHOLD})")
    ax.set_xlabel("false positive rate (reactive called tumoral)")
    ax.set_ylabel("true positive rate (tumoral detected)")
    ax.set_title(f"ROC, out-of-fold, mean ± std over {full.probabilities.shape[0]} repeats")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def confusion(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """2x2 counts [true class, predicted class] at THRESHOLD."""
    predicted = decide(probabilities)
    return np.array([[int(np.sum((labels == t) & (predicted == p))) for p in (0, 1)] for t in (0, 1)])


def figure_confusion(full: CVResult, clinical: CVResult, path: Path) -> str:
    figure = _new_figure(8.0, 3.6)
    axes = figure.subplots(1, 2)
    for ax, result, name in zip(axes, (full, clinical), ("images + clinical", "clinical only")):
        matrix = confusion(result.labels, result.mean_probability)
        rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for t in (0, 1):
            for p in (0, 1):
                ax.text(p, t, f"{matrix[t, p]}\n({rates[t, p]:.0%})", ha="center", va="center", fontsize=11,
                        color="white" if rates[t, p] > 0.6 else "black")
        ticks = [f"{CLASS_NAMES[c]} ({c})" for c in (0, 1)]
        ax.set_xticks([0, 1], ticks)
        ax.set_yticks([0, 1], ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        balanced = np.mean(np.diag(rates))
        ax.set_title(f"{name}\nbalanced accuracy {balanced:.3f}", fontsize=10)
    figure.suptitle(f"Confusion at p ≥ {THRESHOLD} on the mean out-of-fold probability (row %)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def figure_calibration(full: CVResult, clinical: CVResult, path: Path) -> str:
    """Reliability (pooled over repeats) with the number of patients in each bin, and the probabilities by true
    class. Training weighs both classes equally, so a well-ranked model is expected to sit below the diagonal on
    a cohort that is ~2/3 tumoral: the plot shows by how much, and the histogram how separated the classes are."""
    figure = _new_figure(5.4, 6.9)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.6]})
    n_bins = 10 if len(full.ids) >= 100 else 5
    edges = np.linspace(0, 1, n_bins + 1)
    for result, colour, name, offset in ((full, FULL_COLOUR, "images + clinical", 8), (clinical, CLINICAL_COLOUR,
                                                                                      "clinical only", -14)):
        labels = np.tile(result.labels, result.probabilities.shape[0])
        probabilities = result.probabilities.ravel()
        bins = np.clip(np.digitize(probabilities, edges[1:-1]), 0, n_bins - 1)
        counts = np.bincount(bins, minlength=n_bins)
        used = counts > 0
        predicted = np.bincount(bins, probabilities, n_bins)[used] / counts[used]
        observed = np.bincount(bins, labels, n_bins)[used] / counts[used]
        brier = np.mean((probabilities - labels) ** 2)
        top.plot(predicted, observed, "o-", color=colour, label=f"{name} (Brier {brier:.3f})")
        repeats = result.probabilities.shape[0]
        for x, y, n in zip(predicted, observed, counts[used]):
            top.annotate(f"{n / repeats:.0f}", (x, y), textcoords="offset points", xytext=(0, offset), ha="center",
                         fontsize=7, color=colour)
    prevalence = full.labels.mean()
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    top.axhline(prevalence, ls=":", color="grey", lw=1, label=f"tumoral prevalence {prevalence:.2f}")
    top.set_xlabel("mean predicted probability of tumoral (bin)")
    top.set_ylabel("observed fraction tumoral")
    top.set_title(f"Reliability, out-of-fold ({n_bins} bins; numbers: patients per bin, per repeat)", fontsize=10)
    top.set_xlim(0, 1)
    top.set_ylim(-0.05, 1.08)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    mean_probability = full.mean_probability
    bins = np.linspace(0, 1, 21)
    for label, colour in ((0, "#4c9a2a"), (1, "#b2182b")):
        bottom.hist(mean_probability[full.labels == label], bins=bins, alpha=0.6, color=colour,
                    label=f"{CLASS_NAMES[label]} ({int((full.labels == label).sum())})")
    bottom.axvline(THRESHOLD, color="black", lw=1, ls="--")
    bottom.set_xlabel("mean out-of-fold probability of tumoral (images + clinical)")
    bottom.set_ylabel("patients")
    bottom.set_xlim(0, 1)
    bottom.legend(fontsize=8, title="true class", title_fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def _barh(ax, names, values, errors, colour):
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, xerr=errors, color=colour, alpha=0.85, error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#333"})
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(left=0)
    ax.grid(axis="x", alpha=0.3)


def figure_gain(features: pd.DataFrame, n_models: int, path: Path) -> str:
    top = features.sort_values("gain_share", ascending=False).head(TOP_GAIN)
    figure = _new_figure(6.4, 0.6 + 0.28 * len(top))
    ax = figure.subplots()
    _barh(ax, list(top["name"]), 100 * top["gain_share"].to_numpy(), 100 * top["gain_std"].to_numpy(), FULL_COLOUR)
    ax.set_xlabel("share of the model's total gain (%), mean ± std over fold models")
    ax.set_title(f"LightGBM gain, top {len(top)} features, {n_models} fold models", fontsize=10)
    return _save(figure, path)


def figure_families(families: pd.DataFrame, path: Path) -> str:
    figure = _new_figure(6.4, 0.6 + 0.3 * len(families))
    ax = figure.subplots()
    _barh(ax, list(families["name"]), families["mean_abs_shap"].to_numpy(), families["std"].to_numpy(), "#6a3d9a")
    ax.set_xlabel("mean |SHAP| on held-out patients (log-odds), mean ± std over repeats")
    ax.set_title("SHAP by feature family", fontsize=10)
    return _save(figure, path)


def figure_shap_top(ex: Explanations, features: pd.DataFrame, path: Path) -> str:
    """Bar of mean |SHAP| and a beeswarm of each patient's (repeat-averaged) SHAP value, coloured by the
    feature value's rank: the bar says how much a feature matters, the swarm says in which direction."""
    top = features.sort_values("mean_abs_shap", ascending=False).head(TOP_FEATURES)
    index = top.index.to_numpy()
    figure = _new_figure(11.0, 0.9 + 0.34 * len(top))
    left, right = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 1.5]})
    _barh(left, list(top["name"]), top["mean_abs_shap"].to_numpy(), top["shap_std"].to_numpy(), "#6a3d9a")
    left.set_xlabel("mean |SHAP| (log-odds)")
    left.set_title(f"top {len(top)} features by mean |SHAP|", fontsize=10)
    shap, values = ex.patient_shap, ex.patient_values
    rng = np.random.default_rng(0)
    y_positions = np.arange(len(top))[::-1]
    scatter = None
    for y, column in zip(y_positions, index):
        contributions, feature_values = shap[:, column], values[:, column]
        ranks = pd.Series(feature_values).rank(pct=True).to_numpy()
        scatter = right.scatter(contributions, y + rng.uniform(-0.28, 0.28, len(contributions)), c=ranks, cmap="coolwarm",
                                vmin=0, vmax=1, s=10, alpha=0.8, linewidths=0)
    right.axvline(0, color="grey", lw=1)
    right.set_xlabel("SHAP value per patient (log-odds; > 0 pushes towards tumoral)")
    right.set_title("direction: each dot a patient, averaged over repeats", fontsize=10)
    right.grid(axis="x", alpha=0.3)
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=right, fraction=0.04, pad=0.02)
        bar.set_label("feature value (rank: low → high)")
    figure.tight_layout()
    return _save(figure, path)


CURVE_STYLES = {"model": (FULL_COLOUR, "--"), "model, recalibrated": (FULL_COLOUR, "-"),
                "clinical only": (CLINICAL_COLOUR, "-"), "cytometry for all": ("#555555", ":"),
                "cytometry for none": ("black", "-")}


def figure_decision_curve(curves: dict, path: Path, title: str) -> str:
    """Net benefit against threshold probability for each strategy of `decision_curve.decision_curves`."""
    figure = _new_figure(6.4, 4.2)
    ax = figure.subplots()
    grid = np.asarray(curves["threshold"])
    values = [np.asarray(v) for k, v in curves.items() if k != "threshold"]
    for name, net in curves.items():
        if name == "threshold":
            continue
        colour, style = CURVE_STYLES.get(name, ("#7b3294", "-"))
        ax.plot(grid, net, style, color=colour, lw=1.6 if name.startswith("model") else 1.2, label=name)
    top = max(float(np.max(v)) for v in values)
    ax.set_ylim(-0.05 * max(top, 0.1), top * 1.08 + 0.01)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("threshold probability of tumoral (the risk above which you would order cytometry)")
    ax.set_ylabel("net benefit (leukaemias found per patient,\nless unnecessary cytometries weighed)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return _save(figure, path)


def figure_reliability(tables: dict[str, list[dict]], path: Path, title: str) -> str:
    """Reliability bins (calibration.reliability) of each named set of probabilities, patients per bin written."""
    figure = _new_figure(5.4, 4.6)
    ax = figure.subplots()
    for (name, rows), colour, offset in zip(tables.items(), (FULL_COLOUR, "#2a9d4a", CLINICAL_COLOUR), (8, -14, 8)):
        used = [r for r in rows if r["count"] > 0]
        x = [r["mean_probability"] for r in used]
        y = [r["fraction_tumoral"] for r in used]
        ax.plot(x, y, "o-", color=colour, label=name)
        for r in used:
            ax.annotate(f"{r['count']:.0f}", (r["mean_probability"], r["fraction_tumoral"]), textcoords="offset points",
                        xytext=(0, offset), ha="center", fontsize=7, color=colour)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.set_xlabel("mean predicted probability of tumoral (bin)")
    ax.set_ylabel("observed fraction tumoral")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1.08)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    figure.tight_layout()
    return _save(figure, path)
