#!/usr/bin/env python
"""How well each measured quantity alone separates tumoral from reactive patients: the ROC AUC of its per-patient
median, over all labelled patients and on the hard subgroup (lymphocyte count <= 8). An AUC below 0.5 means the
quantity is lower in tumoral patients. From a colour file it also derives the red cells' hue (optical density
(red - blue) / total, relative to the image's background): a property of the slide's staining, not of any
lymphocyte.

    python benchmarks/quantity_auc.py --measurements artifacts/dlmi/colour.h5 artifacts/dlmi/morphometry.h5

No model is fitted: these are descriptive numbers, not accuracies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lymphocytosis.contract.provenance import stain_control
from lymphocytosis.model.cohort import load_cohort
from lymphocytosis.model.subgroups import hard_mask
from lymphocytosis.report.naming import quantity_name


def red_cell_hue(bag: np.ndarray, names: list[str]) -> np.ndarray:
    red = bag[:, [names.index(f"red_cells_{c}") for c in ("red", "green", "blue")]]
    white = bag[:, [names.index(f"background_{c}") for c in ("red", "green", "blue")]]
    od = -np.log(np.clip(red, 1, None) / np.clip(white, 1, None))
    return (od[:, 0] - od[:, 2]) / np.maximum(od.sum(1), 1e-3)


def patient_medians(feature_set, ids: list[str]) -> tuple[list[str], np.ndarray]:
    names = json.loads(feature_set.provenance["dimension_names"])
    rows = []
    for patient_id in ids:
        bag = feature_set.bags[patient_id].astype(np.float64)
        if "red_cells_red" in names:
            bag = np.column_stack([bag, red_cell_hue(bag, names)])
        rows.append(np.nanmedian(bag, axis=0) if len(bag) else np.full(bag.shape[1], np.nan))
    return names + (["red_cell_hue"] if "red_cells_red" in names else []), np.vstack(rows)


def auc(labels: np.ndarray, values: np.ndarray) -> float:
    keep = np.isfinite(values)
    return float(roc_auc_score(labels[keep], values[keep]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", type=Path, nargs="+", required=True, help="extract.py --measure files")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    for path in args.measurements:
        cohort = load_cohort(path, args.root)
        ids = cohort.labelled_ids
        labels, hard = cohort.labels(ids), hard_mask(cohort, ids)
        names, medians = patient_medians(cohort.sets[0], ids)
        print(f"\n{path} ({cohort.sets[0].name}, --stain {stain_control(cohort.sets[0].provenance)}): {len(ids)} "
              f"patients, {int(hard.sum())} with a count <= 8")
        print(f"| {'quantity (per-patient median)':<34} | AUC, all | AUC, hard |")
        print(f"|{'-' * 36}|----------|-----------|")
        for k, name in enumerate(names):
            overall, within = auc(labels, medians[:, k]), auc(labels[hard], medians[hard, k])
            print(f"| {quantity_name(name):<34} | {overall:8.3f} | {within:9.3f} |")


if __name__ == "__main__":
    main()
