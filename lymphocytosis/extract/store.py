"""The embeddings file: one HDF5 per extraction, with its provenance; read by stage 2 without torch.

Layout (format `lymphocytosis-embeddings/1`):

    /                         attrs: provenance (see provenance.PROVENANCE_KEYS), weights_file_sha256, versions, created,
                                     dataset_root, n_patients, n_images, n_skipped, complete=True
    /patients/<ID>/embeddings float (n_cells, D), rows in the order of `filenames`
    /patients/<ID>/filenames  utf-8 strings (n_cells,), image names inside the patient's folder
    /patients/<ID>            attrs: split, n_cells, skipped (JSON list of {"file", "reason"}), note
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError

FORMAT = "lymphocytosis-embeddings/1"
_STR = h5py.string_dtype("utf-8")


@dataclass
class PatientBag:
    """One patient's embeddings, in image order, and what could not be embedded."""

    patient_id: str
    split: str
    embeddings: np.ndarray  # (n_cells, D)
    filenames: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    note: str = ""  # e.g. "folder missing"


def write_bag(group: h5py.Group, bag: PatientBag, dim: int, dtype: str) -> None:
    embeddings = np.asarray(bag.embeddings, dtype=dtype).reshape(-1, dim)
    group.create_dataset("embeddings", data=embeddings)
    group.create_dataset("filenames", data=np.array(bag.filenames, dtype=object), dtype=_STR)
    group.attrs["split"] = bag.split
    group.attrs["n_cells"] = len(bag.filenames)
    group.attrs["skipped"] = json.dumps(bag.skipped)
    group.attrs["note"] = bag.note


def read_bag(group: h5py.Group, patient_id: str) -> PatientBag:
    return PatientBag(
        patient_id=patient_id,
        split=str(group.attrs["split"]),
        embeddings=group["embeddings"][()],
        filenames=[s.decode() if isinstance(s, bytes) else str(s) for s in group["filenames"][()]],
        skipped=json.loads(group.attrs["skipped"]),
        note=str(group.attrs.get("note", "")),
    )


def write_file_attrs(handle: h5py.File, attrs: dict) -> None:
    for key, value in attrs.items():
        handle.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses (TorchVersion)
    handle.attrs["format"] = FORMAT
    handle.attrs["complete"] = True


def read_provenance(path: Path) -> dict:
    """The file's attributes, after checking it is a complete embeddings file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found (run extract.py first)")
    try:
        with h5py.File(path, "r") as handle:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    if attrs.get("format") != FORMAT:
        raise InputError(f"{path}: not an embeddings file of this tool (format {attrs.get('format')!r})")
    if not attrs.get("complete"):
        raise InputError(f"{path}: incomplete embeddings file; rerun extract.py to finish it")
    return attrs


def patient_ids(path: Path) -> set[str]:
    with h5py.File(path, "r") as handle:
        return set(handle["patients"])


def load_bags(path: Path) -> tuple[dict, dict[str, PatientBag]]:
    """Provenance and every patient's bag, read once."""
    provenance = read_provenance(path)
    with h5py.File(path, "r") as handle:
        try:
            bags = {patient_id: read_bag(group, patient_id) for patient_id, group in handle["patients"].items()}
        except (KeyError, OSError, ValueError) as exc:
            raise InputError(f"{path}: damaged embeddings file ({exc}); re-extract it") from None
    return provenance, bags
