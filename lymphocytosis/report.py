"""`model.py report`: one folder that shows how good the model is, why it decides, and where it comes from.

A reader should be able to judge the model without rerunning anything: the cross-validated metrics beside
the clinical-only baseline (what the images add), the curves behind them, which features carry the
decisions (LightGBM gain and SHAP values on held-out patients), each patient's out-of-fold prediction with
the features and the cells behind it, and the exact embeddings, settings and code version that produced it.

Everything shown comes from a single `cv_report(..., keep_models=True)` run: probabilities, SHAP values and
per-cell scores are all out-of-fold (a patient is explained by models that never saw it), averaged over the
CV repeats. The folder is self-contained: `index.html` references its figures and thumbnails by relative
paths, uses no script, font or style from the network, and so opens from disk or from an archive.

Layout of the folder:

    index.html      the report
    summary.md      the headline numbers, top features and provenance, in Markdown
    patients.csv    per-patient out-of-fold probabilities (full and clinical-only models)
    figures/*.png   metrics, ROC, confusion matrices, calibration, gain, SHAP
    cells/<ID>/*.jpg  small thumbnails of each patient's highest- and lowest-scoring cells
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import __version__
from .atomic_files import atomic_write_text
from .bag_features import FeatureSpec
from .classifier import THRESHOLD
from .cohort import Cohort
from .errors import InputError
from .evaluation import CVResult, cv_report

log = logging.getLogger(__name__)

THUMBNAIL_PX = 96  # small enough that 163 patients x 10 cells stay a few MB and render fast
CELLS_PER_SIDE = 5
PUSHES_PER_SIDE = 4
TOP_FEATURES = 15
TOP_GAIN = 20
FIGURE_DPI = 110
FULL_COLOUR, CLINICAL_COLOUR = "#1f5fa8", "#d9822b"
CLASS_NAMES = {0: "reactive", 1: "tumoral"}

_CLINICAL_NAMES = {
    "age": "age",
    "sex_male": "sex (male)",
    "lymph_count": "lymphocyte count",
    "log_lymph_count": "log lymphocyte count",
    "bag_size": "number of cells",
}
_EMBEDDING_COLUMN = re.compile(r"^(?P<stat>[a-z]+\d*)\[(?P<kind>dim|pc)(?P<index>\d+)\]$")


# --------------------------------------------------------------------------------------------- names


def statistic_name(stat: str) -> str:
    """A bag statistic as a reader says it: q90 -> '90th percentile', top10 -> 'mean of top 10%'."""
    fixed = {"mean": "mean", "std": "standard deviation", "min": "minimum", "max": "maximum", "q50": "median"}
    if stat in fixed:
        return fixed[stat]
    if stat.startswith("q") and stat[1:].isdigit():
        n = int(stat[1:])
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix} percentile"
    if stat.startswith("top") and stat[3:].isdigit():
        return f"mean of top {int(stat[3:])}%"
    return stat


def readable_name(column: str) -> str:
    """Feature column -> label for figures: 'cell_score:q90' -> 'cell score, 90th percentile'."""
    kind, _, rest = column.partition(":")
    if kind == "clinical":
        return _CLINICAL_NAMES.get(rest, rest.replace("_", " "))
    if kind == "cell_score":
        return f"cell score, {statistic_name(rest)}"
    if kind == "embedding":
        match = _EMBEDDING_COLUMN.match(rest)
        if match:
            unit = "dim" if match["kind"] == "dim" else "PC"
            return f"embedding {unit} {match['index']}, {statistic_name(match['stat'])}"
    return column


def feature_family(column: str) -> str:
    """The group a column's SHAP values are summed into: each clinical attribute and each cell-score
    statistic alone, embedding statistics pooled over dimensions ('embedding:mean[dim12]' -> 'embedding:mean'),
    since a single one of 1280 dimensions means little while 'the embedding means' does."""
    kind, _, rest = column.partition(":")
    if kind == "embedding":
        match = _EMBEDDING_COLUMN.match(rest)
        if match:
            return f"embedding:{match['stat']}"
    return column


def family_name(family: str, members: list[str]) -> str:
    kind, _, rest = family.partition(":")
    if kind == "embedding" and "[" not in rest:
        unit = "PC" if "[pc" in members[0] else "dim"
        return f"embedding {statistic_name(rest)} ({len(members)} {unit}{'' if len(members) == 1 else 's'})"
    return readable_name(family)


def format_value(column: str, value: float) -> str:
    if value is None or not np.isfinite(value):
        return "missing"
    if column == "clinical:sex_male":
        return "male" if value >= 0.5 else "female"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# --------------------------------------------------------------------------------------------- data


@dataclass
class Explanations:
    """What the CV's held-out models say about each feature and patient, aligned with `CVResult.ids`."""

    columns: list[str]
    gain_share: np.ndarray  # (n_fold_models, F): each fold model's gain, as a fraction of its total
    shap: np.ndarray  # (repeats, n_patients, F + 1): held-out contributions (log-odds), last = base value
    values: np.ndarray  # (repeats, n_patients, F): the held-out feature values those came from
    cell_scores: dict[str, np.ndarray]  # per patient, each cell's held-out score averaged over repeats

    @property
    def patient_shap(self) -> np.ndarray:
        """(n_patients, F + 1) contributions averaged over repeats: one stable explanation per patient."""
        return np.nanmean(self.shap, axis=0)

    @property
    def patient_values(self) -> np.ndarray:
        return np.nanmean(self.values, axis=0)


def explain(cv: CVResult) -> Explanations:
    """Gain and SHAP values of every fold's boosters on that fold's held-out patients, and their cell scores.

    The test table's columns are the booster's features in order (booster names are sanitised, so the table
    is the readable source). With a seed ensemble (n_models > 1) the contributions are averaged over its
    boosters: exact in log-odds, while the ensemble averages probabilities -- close enough to rank features."""
    if not cv.fold_outputs:
        raise ValueError("the CV result has no fold models; run cv_report(..., keep_models=True)")
    columns = list(cv.fold_outputs[0][2].columns)
    position = {pid: i for i, pid in enumerate(cv.ids)}
    repeats, n = cv.probabilities.shape
    shap = np.full((repeats, n, len(columns) + 1), np.nan)
    values = np.full((repeats, n, len(columns)), np.nan)
    gains = []
    score_sums: dict[str, np.ndarray] = {}
    score_counts: dict[str, int] = {}
    for fold, boosters, table, scores in cv.fold_outputs:
        if list(table.columns) != columns:
            raise ValueError(f"fold {fold.repeat}/{fold.fold}: feature columns differ from the first fold's")
        for booster in boosters:
            if booster.num_feature() != len(columns):
                raise ValueError(f"fold {fold.repeat}/{fold.fold}: booster has {booster.num_feature()} features, "
                                 f"table {len(columns)}")
        x = table.to_numpy(dtype=np.float64)
        rows = [position[pid] for pid in table.index]
        shap[fold.repeat, rows] = np.mean([b.predict(x, pred_contrib=True) for b in boosters], axis=0)
        values[fold.repeat, rows] = x
        gain = np.mean([b.feature_importance(importance_type="gain") for b in boosters], axis=0)
        total = gain.sum()
        gains.append(gain / total if total > 0 else np.zeros_like(gain))
        for pid, cell_score in scores.items():
            cell_score = np.asarray(cell_score, dtype=np.float64)
            score_sums[pid] = score_sums.get(pid, 0.0) + cell_score
            score_counts[pid] = score_counts.get(pid, 0) + 1
    cell_scores = {pid: score_sums[pid] / score_counts[pid] for pid in score_sums}
    return Explanations(columns, np.array(gains), shap, values, cell_scores)


_SOURCE_NAMES = {"clinical": "clinical attributes", "cell_score": "cell-score statistics", "embedding": "embedding statistics"}


def feature_source(column: str) -> str:
    """Where a feature comes from: 'clinical', 'cell_score' or 'embedding' (the part before the colon)."""
    return column.partition(":")[0]


def grouped_importance(ex: Explanations, key) -> pd.DataFrame:
    """Mean |sum of a group's SHAP values| over held-out patients, per repeat; mean and std over repeats.

    Summing before the absolute value is what SHAP's additivity allows: the group's total push on one
    patient, so correlated features that share (or cancel) a push are not counted twice."""
    groups = list(dict.fromkeys(key(c) for c in ex.columns))
    members = {g: [c for c in ex.columns if key(c) == g] for g in groups}
    matrix = np.zeros((len(ex.columns), len(groups)))
    for i, column in enumerate(ex.columns):
        matrix[i, groups.index(key(column))] = 1.0
    per_repeat = np.nanmean(np.abs(ex.shap[:, :, :-1] @ matrix), axis=1)  # (repeats, groups)
    frame = pd.DataFrame({
        "family": groups,
        "members": [members[g] for g in groups],
        "n_features": [len(members[g]) for g in groups],
        "mean_abs_shap": per_repeat.mean(0),
        "std": per_repeat.std(0),
    })
    return frame.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


def family_importance(ex: Explanations) -> pd.DataFrame:
    """SHAP by family: each clinical attribute, each cell-score statistic, each embedding statistic (all dims)."""
    frame = grouped_importance(ex, feature_family)
    frame.insert(1, "name", [family_name(f, m) for f, m in zip(frame["family"], frame["members"])])
    return frame.drop(columns="members")


def source_importance(ex: Explanations) -> pd.DataFrame:
    """SHAP by source (clinical / cell score / embedding): how much the images weigh against the clinical
    attributes as a whole, which the per-statistic families split into many small bars."""
    frame = grouped_importance(ex, feature_source)
    frame.insert(1, "name", [_SOURCE_NAMES.get(f, f) for f in frame["family"]])
    return frame.drop(columns="members")


def feature_importance(ex: Explanations) -> pd.DataFrame:
    """Per feature: mean |SHAP| (mean and std over repeats) and share of gain (mean and std over fold models)."""
    per_repeat = np.nanmean(np.abs(ex.shap[:, :, :-1]), axis=1)
    frame = pd.DataFrame({
        "column": ex.columns,
        "name": [readable_name(c) for c in ex.columns],
        "mean_abs_shap": per_repeat.mean(0),
        "shap_std": per_repeat.std(0),
        "gain_share": ex.gain_share.mean(0),
        "gain_std": ex.gain_share.std(0),
    })
    return frame


def select_patients(cohort: Cohort, choice: str) -> list[str]:
    """'all' (every labelled patient), 'none', or comma-separated IDs, checked before the CV runs: only
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


# --------------------------------------------------------------------------------------------- figures


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
            points = np.array([r[metric] for r in result.per_repeat])
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(points)), points, s=18, color=colour, alpha=0.6, zorder=2)
            ax.errorbar(x + 0.28, np.nanmean(points), yerr=np.nanstd(points), fmt="o", color="black", capsize=4, zorder=3)
            ax.annotate(f"{np.nanmean(points):.3f}\n± {np.nanstd(points):.3f}", (x + 0.34, np.nanmean(points)),
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
        predicted = probabilities >= THRESHOLD
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
        auc = result.summary["roc_auc"]
        ax.plot(grid, mean, color=colour, lw=2, label=f"{name}: AUC {auc['mean']:.3f} ± {auc['std']:.3f}")
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
    predicted = (probabilities >= THRESHOLD).astype(int)
    return np.array([[int(np.sum((labels == t) & (predicted == p))) for p in (0, 1)] for t in (0, 1)])


def figure_confusion(full: CVResult, clinical: CVResult, path: Path) -> str:
    figure = _new_figure(8.0, 3.6)
    axes = figure.subplots(1, 2)
    for ax, result, name in zip(axes, (full, clinical), ("images + clinical", "clinical only")):
        matrix = confusion(result.labels, result.probabilities.mean(0))
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
    """Reliability (pooled over repeats) and the probabilities by true class. Training weighs both classes
    equally, so a well-ranked model is expected to sit below the diagonal on a cohort that is ~2/3 tumoral:
    the plot shows by how much, and the histogram shows how separated the classes are."""
    from sklearn.calibration import calibration_curve

    figure = _new_figure(5.4, 6.4)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.6]})
    n_bins = 10 if len(full.ids) >= 100 else 5
    for result, colour, name in ((full, FULL_COLOUR, "images + clinical"), (clinical, CLINICAL_COLOUR, "clinical only")):
        labels = np.tile(result.labels, result.probabilities.shape[0])
        probabilities = result.probabilities.ravel()
        keep = np.isfinite(probabilities)
        observed, predicted = calibration_curve(labels[keep], probabilities[keep], n_bins=n_bins, strategy="uniform")
        ax_name = f"{name} (Brier {np.mean((probabilities[keep] - labels[keep]) ** 2):.3f})"
        top.plot(predicted, observed, "o-", color=colour, label=ax_name)
    prevalence = full.labels.mean()
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    top.axhline(prevalence, ls=":", color="grey", lw=1, label=f"tumoral prevalence {prevalence:.2f}")
    top.set_xlabel("mean predicted probability of tumoral (bin)")
    top.set_ylabel("observed fraction tumoral")
    top.set_title(f"Reliability, out-of-fold, pooled over repeats ({n_bins} bins)", fontsize=10)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    mean_probability = full.probabilities.mean(0)
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


# --------------------------------------------------------------------------------------------- cells


def _thumbnail_geometry(provenance: dict) -> tuple[int, int]:
    """(image_size, crop) of the extraction, so thumbnails show the part of the image that was embedded."""
    try:
        prep = json.loads(provenance.get("preprocessing", "{}"))
        return int(prep.get("image_size", 0)), int(prep.get("crop", 0))
    except (TypeError, ValueError):
        return 0, 0


def write_thumbnail(source: Path, target: Path, image_size: int, crop: int) -> str | None:
    """Small JPEG of the embedded centre crop; the reason as text when the image cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.draft("RGB", (max(image_size, THUMBNAIL_PX), max(image_size, THUMBNAIL_PX)))
            image = image.convert("RGB")
            if image_size and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
            if crop and crop < min(image.size):
                x0, y0 = (image.size[0] - crop) // 2, (image.size[1] - crop) // 2
                image = image.crop((x0, y0, x0 + crop, y0 + crop))
            image = image.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, quality=85)
        return None
    except FileNotFoundError:
        return "image file missing"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"unreadable image ({type(exc).__name__})"


def patient_cells(cohort: Cohort, pid: str, scores: np.ndarray, out_dir: Path, geometry) -> dict:
    """Thumbnails of the CELLS_PER_SIDE highest- and lowest-scoring cells (no cell shown twice)."""
    order = np.argsort(-scores, kind="stable")
    n_top = min(CELLS_PER_SIDE, len(order))
    n_bottom = min(CELLS_PER_SIDE, len(order) - n_top)
    chosen = {"top": list(order[:n_top]), "bottom": list(order[::-1][:n_bottom])}
    folder = cohort.dataset_root / str(cohort.clinical.loc[pid, "split"]) / pid
    result = {"top": [], "bottom": [], "missing": 0}
    for side, cells in chosen.items():
        for rank, cell in enumerate(cells, 1):
            filename = cohort.filenames[pid][cell]
            relative = f"cells/{pid}/{side}{rank}.jpg"
            problem = write_thumbnail(folder / filename, out_dir / relative, *geometry)
            if problem:
                result["missing"] += 1
                result.setdefault("first_problem", f"{folder / filename}: {problem}")
                log.debug("patient %s: %s: %s", pid, folder / filename, problem)
            result[side].append({"file": filename, "score": float(scores[cell]), "src": None if problem else relative,
                                 "problem": problem})
    return result


# --------------------------------------------------------------------------------------------- html


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;background:#f5f6f8}
main{max-width:1240px;margin:0 auto;padding:16px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:21px;border-bottom:2px solid #dde3ea;padding-bottom:4px;margin-top:36px}
h3{font-size:16px;margin:20px 0 6px}
nav a{margin-right:16px}a{color:#1f5fa8}
.lede{color:#4a5868;margin:0 0 12px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:12px 0}
.metric{border:1px solid #dde3ea;border-radius:8px;padding:10px 16px;min-width:210px}
.metric .v{font-size:26px;font-weight:600}.metric .k{color:#4a5868;font-size:13px}
.metric .c{color:#a0560f;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #e6eaef;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f3f6}th.key{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.grid2{display:grid;grid-template-columns:1.35fr 1fr;gap:18px 24px;align-items:start}
.grid2 figure{margin-bottom:14px}.grid2 img{width:100%;height:auto}
figure{margin:0}figure img{max-width:100%;border:1px solid #e6eaef}
figcaption{font-size:12px;color:#4a5868;max-width:620px;margin-top:4px}
.scroll{max-height:460px;overflow-y:auto;border:1px solid #e6eaef;display:inline-block}
.patient{border:1px solid #dde3ea;border-radius:8px;padding:10px 14px;margin:12px 0}
.patient.wrong{border-color:#d9822b;border-width:2px}
.patient h3{margin:0 0 4px}.sub{color:#4a5868;font-size:13px}
.cols{display:flex;gap:24px;flex-wrap:wrap;margin-top:6px}.cols>div:first-child{width:400px}
.push{font-size:12px;border:none}.push td{border:none;padding:1px 6px}
.bar{display:inline-block;height:10px;border-radius:2px}.up{background:#b2182b}.down{background:#2166ac}
.cells{display:flex;gap:4px;flex-wrap:wrap}.cell{font-size:10px;text-align:center;color:#4a5868;width:96px}
.cell img{width:96px;height:96px;display:block;border:1px solid #ccd}
.missing{width:96px;height:96px;display:flex;align-items:center;justify-content:center;background:#f0f0f0;
 border:1px dashed #bbb;font-size:10px;text-align:center}
.ok{color:#2b7a2b}.bad{color:#b35400;font-weight:600}
code,pre{font-size:12px;background:#f3f5f7;border-radius:4px}pre{padding:8px;white-space:pre-wrap;word-break:break-all}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(src: str, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="{_e(quote(src))}" alt="{_e(alt)}"{size} loading="lazy">'


def _figure(src: str, alt: str, caption: str, width: int | None = None) -> str:
    return f"<figure>{_img(src, alt, width)}<figcaption>{caption}</figcaption></figure>"


def _pm(summary: dict) -> str:
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


@dataclass
class PatientView:
    pid: str
    label: int
    probability: float
    spread: float
    clinical_probability: float
    clinical: dict
    n_cells: int
    base: float
    logit: float  # base + every feature's contribution
    up: list  # (name, value text, contribution)
    down: list
    cells: dict | None

    @property
    def predicted(self) -> int:
        return int(self.probability >= THRESHOLD)

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


def _pushes_html(view: PatientView, scale: float) -> str:
    rows = []
    for title, items, css in (("towards tumoral", view.up, "up"), ("towards reactive", view.down, "down")):
        rows.append(f'<tr><td colspan="3"><b>{title}</b></td></tr>')
        if not items:
            rows.append('<tr><td colspan="3" class="sub">none</td></tr>')
        for name, value, contribution in items:
            width = max(2, int(110 * abs(contribution) / scale)) if scale > 0 else 2
            rows.append(f'<tr><td>{_e(name)} = {_e(value)}</td><td class="num">{contribution:+.2f}</td>'
                        f'<td><span class="bar {css}" style="width:{width}px"></span></td></tr>')
    return f'<table class="push">{"".join(rows)}</table>'


def _cells_html(cells: dict | None, note: str) -> str:
    if cells is None:
        return f'<div class="sub">{_e(note)}</div>'
    parts = []
    for side, title in (("top", "most tumoral-looking (highest cell score)"), ("bottom", "least tumoral-looking (lowest)")):
        items = []
        for cell in cells[side]:
            caption = f"{cell['score']:+.2f}"
            if cell["src"]:
                items.append(f'<div class="cell" title="{_e(cell["file"])}">{_img(cell["src"], cell["file"])}{_e(caption)}</div>')
            else:
                items.append(f'<div class="cell"><div class="missing">{_e(cell["problem"])}<br>{_e(cell["file"])}</div>'
                             f'{_e(caption)}</div>')
        parts.append(f'<div class="sub">{title}</div><div class="cells">{"".join(items) or "<i>no cells</i>"}</div>')
    return "".join(parts)


def _patient_html(view: PatientView, scale: float, cell_note: str) -> str:
    verdict = ('<span class="ok">correct</span>' if view.correct
               else f'<span class="bad">wrong: predicted {CLASS_NAMES[view.predicted]}</span>')
    clinical = ", ".join(f"{k} {v}" for k, v in view.clinical.items())
    return (
        f'<div class="patient{"" if view.correct else " wrong"}" id="patient-{_e(view.pid)}">'
        f"<h3>{_e(view.pid)}: {CLASS_NAMES[view.label]} (label {view.label}), "
        f"P(tumoral) = {view.probability:.2f} ± {view.spread:.2f} — {verdict}</h3>"
        f'<div class="sub">{_e(clinical)}, {view.n_cells} cells; clinical-only model P(tumoral) = '
        f"{view.clinical_probability:.2f}. SHAP in log-odds from base {view.base:+.2f}, averaged over repeats "
        f"to {view.logit:+.2f} in all.</div>"
        f'<div class="cols"><div>{_pushes_html(view, scale)}</div><div>{_cells_html(view.cells, cell_note)}</div></div>'
        "</div>"
    )


def _provenance_rows(cohort: Cohort, spec: FeatureSpec, params: dict, source: str, context: dict) -> list:
    prov = cohort.provenance
    preprocessing = prov.get("preprocessing", "")
    try:
        preprocessing = json.dumps(json.loads(preprocessing), sort_keys=True)
    except (TypeError, ValueError):
        pass
    rows = [
        ("embeddings file", str(Path(cohort.embeddings_path).resolve())),
        ("embedding model", prov.get("model")),
        ("weights source", prov.get("weights_source")),
        ("weights sha256", prov.get("weights_sha256")),
        ("preprocessing", preprocessing),
        ("test-time augmentation", prov.get("tta")),
        ("precision / stored dtype", f"{prov.get('precision')} / {prov.get('dtype')}"),
        ("embeddings created", prov.get("created")),
        ("extraction versions", f"tool {prov.get('tool_version')}, timm {prov.get('timm_version')}, "
                                f"torch {prov.get('torch_version')}, device {prov.get('device')}"),
        ("images embedded / skipped", f"{prov.get('n_images')} / {prov.get('n_skipped')}"),
        ("dataset root", str(cohort.dataset_root)),
        ("settings source", source),
        ("feature specification", json.dumps(spec.to_dict(), sort_keys=True)),
        ("LightGBM parameters", json.dumps(params, sort_keys=True)),
        ("cross-validation", f"{context['folds']}-fold stratified by patient x {context['repeats']} repeats, "
                             f"seed {context['seed']}; decision threshold {THRESHOLD}"),
        ("report date", context["date"]),
        ("tool version", f"lymphocytosis {__version__}"),
        ("build time", f"{context['seconds']:.0f} s (cross-validation {context['cv_seconds']:.0f} s)"),
    ]
    return [(k, "" if v is None else str(v)) for k, v in rows]


# --------------------------------------------------------------------------------------------- build


REPORT_ENTRIES = {"index.html", "index.html.tmp", "summary.md", "patients.csv", "figures", "cells"}


def prepare_out_dir(args) -> Path:
    """The report folder: `--out-dir`, or a new artifacts/report-<date>. An existing folder is reused only when
    it holds nothing but an earlier report (whose figures and thumbnails are then removed, so no stale cell
    from another run is left beside the new page); anything else is refused rather than mixed or deleted."""
    out_dir = getattr(args, "out_dir", None)
    if not out_dir:
        base = Path("artifacts") / f"report-{dt.datetime.now():%Y%m%d-%H%M%S}"
        out_dir, k = base, 1
        while out_dir.exists():
            k += 1
            out_dir = base.with_name(f"{base.name}-{k}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out-dir {out_dir}: exists and is not a folder")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in REPORT_ENTRIES)
        if foreign:
            raise InputError(f"--out-dir {out_dir}: holds other files than a report ({foreign[0]}, ...); "
                             "choose an empty or new folder")
        (out_dir / "index.html").unlink(missing_ok=True)  # first: a run stopped half-way leaves no stale page
        for name in ("figures", "cells"):
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
    return out_dir


def build_report(cohort: Cohort, spec: FeatureSpec, params: dict, source: str, args) -> Path:
    """Run the CV once (models kept) and write the report folder; returns it."""
    started = time.perf_counter()
    folds, repeats, seed = int(getattr(args, "folds", 5)), int(getattr(args, "repeats", 10)), int(getattr(args, "seed", 0))
    patients = select_patients(cohort, getattr(args, "patients", "all"))
    out_dir = prepare_out_dir(args)
    log.info("report: %d-fold x %d repeats CV (seed %d), models kept for explanations", folds, repeats, seed)
    summary, full, clinical = cv_report(cohort, spec, params, folds, repeats, seed, keep_models=True)
    cv_seconds = time.perf_counter() - started
    log.info("report: CV done in %.1f s", cv_seconds)
    context = {"folds": folds, "repeats": repeats, "seed": seed, "cv_seconds": cv_seconds, "started": started}
    return write_report(out_dir, cohort, spec, params, source, summary, full, clinical, patients, context)


def write_report(out_dir: Path, cohort: Cohort, spec: FeatureSpec, params: dict, source: str, summary: dict,
                 full: CVResult, clinical: CVResult, patients: list[str], context: dict) -> Path:
    """Everything after the CV: figures, thumbnails, summary.md, patients.csv and finally index.html (written
    last, so a folder with an index.html is a finished report)."""
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    context = {**context, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    step = time.perf_counter()

    ex = explain(full)
    families = family_importance(ex)
    sources = source_importance(ex)
    features = feature_importance(ex)
    n_fold_models = len(ex.gain_share)
    figures = {
        "metrics": figure_metrics(full, clinical, figures_dir / "metrics.png"),
        "roc": figure_roc(full, clinical, figures_dir / "roc.png"),
        "confusion": figure_confusion(full, clinical, figures_dir / "confusion.png"),
        "calibration": figure_calibration(full, clinical, figures_dir / "calibration.png"),
        "gain": figure_gain(features, n_fold_models, figures_dir / "gain.png"),
        "families": figure_families(families, figures_dir / "shap_families.png"),
        "shap_top": figure_shap_top(ex, features, figures_dir / "shap_top.png"),
    }
    log.info("report: explanations and figures in %.1f s", time.perf_counter() - step)

    # per-patient table (every labelled patient) and views (those chosen)
    step = time.perf_counter()
    mean_full, mean_clinical = full.probabilities.mean(0), clinical.probabilities.mean(0)
    table = pd.DataFrame({
        "ID": full.ids, "label": full.labels, "probability": mean_full.round(4),
        "probability_std": full.probabilities.std(0).round(4), "predicted": (mean_full >= THRESHOLD).astype(int),
        "clinical_only_probability": mean_clinical.round(4),
    })
    table.to_csv(out_dir / "patients.csv", index=False)
    position = {pid: i for i, pid in enumerate(full.ids)}
    patient_shap, patient_values = ex.patient_shap, ex.patient_values
    has_cell_score = bool(ex.cell_scores)
    cell_note = "" if has_cell_score else "no per-cell score in this feature specification (cell_score off): no cells to rank"
    geometry = _thumbnail_geometry(cohort.provenance)
    views, missing_images, first_problem = [], 0, ""
    for pid in patients:
        i = position[pid]
        contributions = patient_shap[i, :-1]
        order = np.argsort(-contributions, kind="stable")
        up = [j for j in order[:PUSHES_PER_SIDE] if contributions[j] >= 0.005]
        down = [j for j in order[::-1][:PUSHES_PER_SIDE] if contributions[j] <= -0.005]  # below display precision: noise

        def described(js):
            return [(readable_name(ex.columns[j]), format_value(ex.columns[j], patient_values[i, j]), float(contributions[j]))
                    for j in js]

        row = cohort.clinical.loc[pid]
        cells = None
        if has_cell_score and pid in ex.cell_scores:
            cells = patient_cells(cohort, pid, ex.cell_scores[pid], out_dir, geometry)
            missing_images += cells["missing"]
            first_problem = first_problem or cells.get("first_problem", "")
        views.append(PatientView(
            pid=pid, label=int(full.labels[i]), probability=float(mean_full[i]), spread=float(full.probabilities[:, i].std()),
            clinical_probability=float(mean_clinical[i]),
            clinical={"age": f"{row['age']:.0f}", "sex": "male" if row["sex_male"] >= 0.5 else "female",
                      "lymphocyte count": f"{row['lymph_count']:.3g}"},
            n_cells=len(cohort.bags[pid]), base=float(patient_shap[i, -1]),
            logit=float(patient_shap[i].sum()), up=described(up), down=described(down),
            cells=cells,
        ))
    if missing_images:
        log.warning("report: %d cell images could not be read (first: %s); a note stands in for each thumbnail",
                    missing_images, first_problem)
    log.info("report: %d patient views (%d thumbnails) in %.1f s", len(views),
             sum(len(v.cells["top"]) + len(v.cells["bottom"]) for v in views if v.cells), time.perf_counter() - step)

    context["seconds"] = time.perf_counter() - context.get("started", time.perf_counter())
    provenance = _provenance_rows(cohort, spec, params, source, context)
    markdown = render_markdown(summary, full, clinical, families, sources, features, table, figures, provenance, missing_images)
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    page = render_html(summary, full, clinical, families, sources, features, table, figures, provenance, views, cell_note,
                       missing_images, n_fold_models)
    atomic_write_text(out_dir / "index.html", page)
    log.info("report: wrote %s in %.1f s in all", out_dir / "index.html", time.perf_counter() - context.get("started", step))
    return out_dir


def _headline(summary: dict) -> dict:
    clinical = summary["clinical_only"]
    return {
        "ba": _pm(summary["balanced_accuracy"]), "auc": _pm(summary["roc_auc"]),
        "ba_clinical": _pm(clinical["balanced_accuracy"]), "auc_clinical": _pm(clinical["roc_auc"]),
        "ba_gain": summary["balanced_accuracy"]["mean"] - clinical["balanced_accuracy"]["mean"],
        "auc_gain": summary["roc_auc"]["mean"] - clinical["roc_auc"]["mean"],
    }


def render_markdown(summary, full, clinical, families, sources, features, table, figures, provenance, missing_images) -> str:
    h = _headline(summary)
    matrix = confusion(full.labels, full.probabilities.mean(0))
    wrong = table[table["label"] != table["predicted"]]
    lines = [
        "# Lymphocytosis classifier report",
        "",
        f"{summary['n_patients']} labelled patients ({summary['n_tumoral']} tumoral), {summary['folds']}-fold "
        f"stratified CV x {summary['repeats']} repeats (seed {summary['seed']}); mean ± std over repeats. "
        "Open `index.html` for the figures and the per-patient views.",
        "",
        "## Performance",
        "",
        "| model | balanced accuracy | ROC AUC |",
        "|---|---|---|",
        f"| images + clinical | {h['ba']} | {h['auc']} |",
        f"| clinical only | {h['ba_clinical']} | {h['auc_clinical']} |",
        "",
        f"The images add {h['ba_gain']:+.3f} balanced accuracy and {h['auc_gain']:+.3f} AUC over the clinical-only "
        "model on the same folds.",
        "",
        f"Confusion at p ≥ {THRESHOLD} on the mean out-of-fold probability (rows: true, columns: predicted):",
        "",
        "| | predicted reactive | predicted tumoral |",
        "|---|---|---|",
        f"| reactive | {matrix[0, 0]} | {matrix[0, 1]} |",
        f"| tumoral | {matrix[1, 0]} | {matrix[1, 1]} |",
        "",
        f"Misclassified ({len(wrong)}): " + (", ".join(f"{r.ID} (label {r.label}, p {r.probability:.2f})"
                                                     for r in wrong.itertuples()) or "none"),
        "",
        f"![metrics]({figures['metrics']}) ![ROC]({figures['roc']})",
        f"![confusion]({figures['confusion']}) ![calibration]({figures['calibration']})",
        "",
        "## Feature importance",
        "",
        "SHAP on held-out patients, mean |sum of the group's SHAP values| (log-odds, ± std over repeats). By source:",
        "",
        "| source | features | mean abs SHAP |",
        "|---|---|---|",
        *[f"| {r.name} | {r.n_features} | {r.mean_abs_shap:.3f} ± {r.std:.3f} |" for r in sources.itertuples()],
        "",
        "By family:",
        "",
        "| family | features | mean abs SHAP |",
        "|---|---|---|",
        *[f"| {r.name} | {r.n_features} | {r.mean_abs_shap:.3f} ± {r.std:.3f} |" for r in families.itertuples()],
        "",
        f"Top {min(TOP_FEATURES, len(features))} single features:",
        "",
        "| feature | mean abs SHAP | share of gain |",
        "|---|---|---|",
        *[f"| {r.name} | {r.mean_abs_shap:.3f} ± {r.shap_std:.3f} | {100 * r.gain_share:.1f}% ± {100 * r.gain_std:.1f}% |"
          for r in features.sort_values("mean_abs_shap", ascending=False).head(TOP_FEATURES).itertuples()],
        "",
        f"![SHAP families]({figures['families']}) ![gain]({figures['gain']})",
        f"![SHAP top features]({figures['shap_top']})",
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | `{v}` |" for k, v in provenance],
        "",
    ]
    if missing_images:
        lines.insert(-1, f"{missing_images} cell images could not be read; their thumbnails are left out.")
    return "\n".join(lines)


def render_html(summary, full, clinical, families, sources, features, table, figures, provenance, views, cell_note,
                missing_images, n_fold_models) -> str:
    h = _headline(summary)
    repeats = summary["repeats"]
    wrong = table[table["label"] != table["predicted"]]
    shown = {v.pid for v in views}

    def link(pid):
        return f'<a href="#patient-{_e(pid)}">{_e(pid)}</a>' if pid in shown else _e(pid)

    rows = "".join(
        f'<tr><td>{link(r.ID)}</td><td>{CLASS_NAMES[r.label]}</td><td class="num">{r.probability:.2f} ± {r.probability_std:.2f}</td>'
        f'<td class="num">{r.clinical_only_probability:.2f}</td>'
        f'<td>{"<span class=ok>correct</span>" if r.label == r.predicted else "<span class=bad>wrong</span>"}</td></tr>'
        for r in table.sort_values("probability", ascending=False).itertuples()
    )
    family_rows = "".join(
        f'<tr><td>{_e(r.name)}</td><td class="num">{r.n_features}</td><td class="num">{r.mean_abs_shap:.3f} ± {r.std:.3f}</td></tr>'
        for r in families.itertuples()
    )
    source_rows = "".join(
        f'<tr><td>{_e(r.name)}</td><td class="num">{r.n_features}</td><td class="num">{r.mean_abs_shap:.3f} ± {r.std:.3f}</td></tr>'
        for r in sources.itertuples()
    )
    top_rows = "".join(
        f'<tr><td>{_e(r.name)}</td><td><code>{_e(r.column)}</code></td><td class="num">{r.mean_abs_shap:.3f} ± {r.shap_std:.3f}</td>'
        f'<td class="num">{100 * r.gain_share:.1f}% ± {100 * r.gain_std:.1f}%</td></tr>'
        for r in features.sort_values("mean_abs_shap", ascending=False).head(TOP_FEATURES).itertuples()
    )
    scale = max([abs(c) for v in views for _, _, c in (*v.up, *v.down)] or [1.0])
    if views:
        patient_html = "".join(_patient_html(v, scale, cell_note) for v in views)
    else:
        patient_html = '<p class="sub">No per-patient views requested (<code>--patients none</code>).</p>'
    missing_note = (f'<p class="bad">{missing_images} cell images could not be read; a note stands in for each.</p>'
                    if missing_images else "")
    provenance_rows = "".join(f"<tr><th class=\"key\">{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in provenance)
    wrong_links = ", ".join(f"{link(r.ID)} ({CLASS_NAMES[r.label]}, p {r.probability:.2f})" for r in wrong.itertuples()) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lymphocytosis classifier report</title>
<style>{_CSS}</style></head>
<body><main>
<h1>Tumoral vs reactive lymphocytosis: classifier report</h1>
<p class="lede">{summary['n_patients']} labelled patients ({summary['n_tumoral']} tumoral), {summary['folds']}-fold
stratified cross-validation by patient x {repeats} repeats (seed {summary['seed']}). Every number and picture below is
out-of-fold: each patient is scored and explained only by models that never saw it.</p>
<nav><a href="#performance">Performance</a><a href="#feature-importance">Feature importance</a>
<a href="#patients">Per patient</a><a href="#provenance">Provenance</a><a href="summary.md">summary.md</a>
<a href="patients.csv">patients.csv</a></nav>

<section id="performance"><h2>Performance</h2>
<div class="cards">
<div class="metric"><div class="k">balanced accuracy (images + clinical)</div><div class="v">{h['ba']}</div>
<div class="c">clinical only: {h['ba_clinical']} ({h['ba_gain']:+.3f})</div></div>
<div class="metric"><div class="k">ROC AUC (images + clinical)</div><div class="v">{h['auc']}</div>
<div class="c">clinical only: {h['auc_clinical']} ({h['auc_gain']:+.3f})</div></div>
</div>
<p class="sub">Mean ± standard deviation over the {repeats} repeats; both models on the very same folds, so the
difference is what the cell images add.</p>
<div class="grid2">
<div>{_figure(figures['metrics'], 'per-repeat metrics', 'Each dot is one repeat of the whole cross-validation.')}
{_figure(figures['confusion'], 'confusion matrices', f'Patients classified by their mean out-of-fold probability at p ≥ {THRESHOLD}. Averaging the repeats acts as an ensemble, so this balanced accuracy can exceed the per-repeat mean above.')}</div>
<div>{_figure(figures['roc'], 'ROC curves', f'Per-repeat ROC curves averaged vertically; band ±1 std; dot: operating point at p ≥ {THRESHOLD}, averaged over repeats.')}</div>
<div><h3>Misclassified patients ({len(wrong)})</h3><p>{wrong_links}</p>
<h3>Every patient, by out-of-fold probability</h3>
<div class="scroll"><table><tr><th>patient</th><th>true class</th><th>P(tumoral) ± std</th><th>clinical only</th><th></th></tr>
{rows}</table></div></div>
<div>{_figure(figures['calibration'], 'calibration', 'Training weighs both classes equally (the threshold targets balanced accuracy), so probabilities need not match the observed tumoral fraction of a cohort that is mostly tumoral.')}</div>
</div>
</section>

<section id="feature-importance"><h2>Feature importance</h2>
<p class="sub">SHAP values are LightGBM's exact tree contributions (<code>pred_contrib</code>) computed on each fold's
held-out patients, in log-odds; a family's value is the sum over its features for a patient. Gain is each fold model's
total split gain per feature as a share of the model's total, over {n_fold_models} fold models.</p>
<div class="figs">
{_figure(figures['families'], 'SHAP by family', 'Mean |SHAP| per family on held-out patients.', 560)}
{_figure(figures['gain'], 'LightGBM gain', 'Gain (not split counts): how much each feature improved the training loss.', 560)}
{_figure(figures['shap_top'], 'top features by SHAP', 'Left: mean |SHAP| ± std over repeats. Right: each patient’s SHAP value (averaged over repeats), red = high feature value.', 1100)}
</div>
<div class="figs"><div><h3>By source</h3><table><tr><th>source</th><th>features</th><th>mean |SHAP|</th></tr>{source_rows}</table>
<h3>By family</h3><table><tr><th>family</th><th>features</th><th>mean |SHAP|</th></tr>{family_rows}</table></div>
<div><h3>Top {min(TOP_FEATURES, len(features))} features</h3><table><tr><th>feature</th><th>column</th><th>mean |SHAP|</th><th>share of gain</th></tr>{top_rows}</table></div></div>
</section>

<section id="patients"><h2>Per patient</h2>
<p class="sub">Out-of-fold probability (mean ± std over repeats) and label; the features that push the prediction up
(towards tumoral) and down, from SHAP on the held-out folds averaged over repeats; and the cells with the highest and
lowest held-out "tumoral" cell score (score under each thumbnail; the thumbnail is the centre crop that was embedded).
Misclassified patients have an orange frame.</p>
{missing_note}
{patient_html}
</section>

<section id="provenance"><h2>Provenance</h2>
<table>{provenance_rows}</table>
</section>
</main></body></html>
"""
