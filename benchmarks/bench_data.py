"""Datasets for the benchmarks: a synthetic one, or the first patients of a real one copied to a temporary folder
(copied, not linked: extraction does not follow links out of a dataset)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lymphocytosis.contract.layout import discover_patients
from lymphocytosis.synthetic import make_synthetic_dataset


def subset_dataset(root: Path, n_patients: int, into: Path) -> Path:
    """The first `n_patients` trainset patients of `root`, copied under `into`."""
    patients = [p for p in discover_patients(root) if p.split == "trainset"][:n_patients]
    (into / "trainset").mkdir(parents=True)
    lines = (root / "trainset" / "trainset_true.csv").read_text().splitlines()
    keep = {p.patient_id for p in patients}
    (into / "trainset" / "trainset_true.csv").write_text(
        "\n".join([lines[0]] + [line for line in lines[1:] if line.split(",")[0].strip() in keep]) + "\n"
    )
    for p in patients:
        shutil.copytree(p.folder, into / "trainset" / p.patient_id)
    return into


def benchmark_dataset(root: Path | None, n_patients: int, tmp: Path, cells: tuple[int, int] = (60, 100)) -> Path:
    if root is None:
        return make_synthetic_dataset(tmp / "synthetic", n_train=n_patients, n_test=0, cells=cells)
    return subset_dataset(root, n_patients, tmp / "subset")
