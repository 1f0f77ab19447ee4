"""The patients a model sees: clinical table and embedding bags, loaded once per process and checked to agree."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .clinical import read_clinical
from .embedding_store import load_bags
from .errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    clinical: pd.DataFrame  # indexed by patient ID: label (-1 unknown), split, clinical features
    bags: dict[str, np.ndarray]  # (n_cells, D) float32 per patient, image order
    filenames: dict[str, list[str]]
    provenance: dict
    embeddings_path: Path
    dataset_root: Path
    _cache: dict = field(default_factory=dict, repr=False)  # per-process derived data (e.g. cell Gram matrices)

    @property
    def ids(self) -> list[str]:
        return list(self.clinical.index)

    @property
    def labelled_ids(self) -> list[str]:
        return list(self.clinical.index[self.clinical["label"] >= 0])

    @property
    def unlabelled_ids(self) -> list[str]:
        return list(self.clinical.index[self.clinical["label"] < 0])

    def labels(self, ids) -> np.ndarray:
        return self.clinical.loc[list(ids), "label"].to_numpy(dtype=int)

    @property
    def fingerprint(self) -> str:
        """Which labelled patients (and labels) this is: tuned settings and studies are tied to it."""
        text = ",".join(f"{pid}:{label}" for pid, label in sorted(zip(self.labelled_ids, self.labels(self.labelled_ids))))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def dim(self) -> int:
        return next(iter(self.bags.values())).shape[1]


def load_cohort(embeddings_path: Path, root: Path | None = None) -> Cohort:
    """Embeddings plus the CSVs of the dataset they were extracted from (or `root`, when given)."""
    embeddings_path = Path(embeddings_path)
    provenance, bags = load_bags(embeddings_path)
    root = Path(root) if root else Path(provenance.get("dataset_root", ""))
    clinical = read_clinical(root)
    missing = [pid for pid in clinical.index if pid not in bags]
    if missing:
        raise InputError(
            f"{embeddings_path}: no embeddings for patient {missing[0]} (of {len(missing)} listed in {root}'s CSVs); "
            "rerun extract.py on this dataset"
        )
    extra = [pid for pid in bags if pid not in clinical.index]
    if extra:
        raise InputError(f"{embeddings_path}: patient {extra[0]} has embeddings but no row in {root}'s CSVs")
    for pid, bag in bags.items():
        if bag.embeddings.shape[0] == 0:
            log.warning("patient %s has 0 cells (%s); its image features will be missing", pid, bag.note or "all skipped")
    return Cohort(
        clinical=clinical,
        bags={pid: bags[pid].embeddings.astype(np.float32, copy=False) for pid in clinical.index},
        filenames={pid: bags[pid].filenames for pid in clinical.index},
        provenance=provenance,
        embeddings_path=embeddings_path,
        dataset_root=root,
    )
