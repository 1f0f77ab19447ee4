"""How features, statistics and values read in the report: one place for every name a reader sees."""

from __future__ import annotations

import numpy as np

from ..model.tables import CELL_SCORE, CLINICAL, EMBEDDING, MEASUREMENT, FeatureColumn

CLASS_NAMES = {0: "reactive", 1: "tumoral"}
CLINICAL_NAMES = {
    "age": "age",
    "sex_male": "sex",
    "lymph_count": "lymphocyte count",
    "log_lymph_count": "log lymphocyte count",
    "bag_size": "number of cells",
}
COUNT_UNIT = "×10⁹/L"  # the challenge's LYMPH_COUNT: lymphocytes per litre of blood, in 10^9
CELL_SCORE_SCALE = ("the cell score is learned on the training patients: about 0 for a cell typical of reactive "
                    "patients' cells, about 1 for one typical of tumoral patients' cells (beyond 0-1: more so)")
SOURCE_NAMES = {CLINICAL: "clinical attributes", CELL_SCORE: "cell-score statistics", EMBEDDING: "embedding statistics",
                MEASUREMENT: "measured quantities"}
UNITS = {"px2": "px²", "um2": "µm²", "px": "px", "um": "µm"}


def quantity_name(name: str) -> str:
    """A measured quantity as a reader says it: nucleus_area_um2 -> 'nucleus area (µm²)', nc_ratio -> 'N/C ratio'."""
    words, unit = name.split("_"), ""
    if words[-1] in UNITS:
        unit = f" ({UNITS[words.pop()]})"
    text = " ".join(words).replace("nc ratio", "N/C ratio")
    return f"{text}{unit}"


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


def readable_name(column: FeatureColumn, several_backbones: bool = False) -> str:
    """A feature as a label for figures: 'cell score, 90th percentile'."""
    if column.family == CLINICAL:
        return CLINICAL_NAMES.get(column.attribute, str(column.attribute).replace("_", " "))
    suffix = f" [{column.backbone}]" if several_backbones else ""
    if column.family == CELL_SCORE:
        return f"cell score, {statistic_name(column.statistic)}{suffix}"
    if column.family == MEASUREMENT:
        return f"{quantity_name(str(column.attribute))}, {statistic_name(column.statistic)} [{column.backbone}]"
    unit = "dim" if column.basis == "dim" else "PC"
    return f"embedding {unit} {column.index}, {statistic_name(column.statistic)}{suffix}"


def feature_family(column: FeatureColumn) -> tuple:
    """The group a column's SHAP values are summed into: each clinical attribute and each cell-score statistic
    alone, embedding statistics pooled over dimensions, since a single one of 1280 dimensions means little
    while 'the embedding means' does."""
    if column.family == EMBEDDING:
        return (EMBEDDING, column.backbone, column.statistic)
    return (column.family, column.attribute, column.backbone, column.statistic)


def family_name(members: list[FeatureColumn], several_backbones: bool = False) -> str:
    first = members[0]
    if first.family == EMBEDDING:
        unit = "PC" if first.basis == "pc" else "dim"
        suffix = f" [{first.backbone}]" if several_backbones else ""
        return f"embedding {statistic_name(first.statistic)} ({len(members)} {unit}{'' if len(members) == 1 else 's'}){suffix}"
    return readable_name(first, several_backbones)


def source_name(column: FeatureColumn) -> str:
    return SOURCE_NAMES.get(column.family, column.family)


def backbone_name(column: FeatureColumn) -> str:
    return "clinical attributes" if column.backbone is None else f"images: {column.backbone}"


def format_value(column: FeatureColumn, value: float) -> str:
    if value is None or not np.isfinite(value):
        return "missing"
    if column.family == CLINICAL and column.attribute == "sex_male":
        return "male" if value >= 0.5 else "female"
    if column.family == CLINICAL and column.attribute == "lymph_count":
        return f"{value:.3g} {COUNT_UNIT}"
    if column.family == CLINICAL and column.attribute == "age":
        return f"{value:.0f} years"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"
