"""The embeddings file: one HDF5 per extraction, with its provenance, written so that it is never half-read.

Layout (format `lymphocytosis-embeddings/1`):

    /                         attrs: provenance (see PROVENANCE_KEYS), versions, created, dataset_root,
                                     n_patients, n_images, n_skipped, complete=True
    /patients/<ID>/embeddings float (n_cells, D), rows in the order of `filenames`
    /patients/<ID>/filenames  utf-8 strings (n_cells,), image names inside the patient's folder
    /patients/<ID>            attrs: split, n_cells, skipped (JSON list of {"file", "reason"}), note

While an extraction runs, each finished patient is its own small HDF5 under `<out>.parts/`, written to a
temporary name and renamed into place (as STAMP does), so a kill at any moment loses at most the patient
in progress and never leaves a truncated part that looks finished. The final file is assembled the same
way (temporary name, then rename), and only then is the parts folder removed. An exclusive `flock` on
`<out>.lock` refuses a second writer; the kernel drops it when the process dies, so a kill never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .atomic_files import atomic_write_text, fsync_file
from .errors import InputError

log = logging.getLogger(__name__)

FORMAT = "lymphocytosis-embeddings/1"
# What makes two embeddings comparable; versions and dates are recorded but do not make files differ.
PROVENANCE_KEYS = ("model", "weights_source", "weights_sha256", "features", "preprocessing", "tta", "precision", "dtype")
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


def describe_provenance_difference(a: dict, b: dict) -> str:
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in PROVENANCE_KEYS if a.get(k) != b.get(k)]
    return "; ".join(diffs) or "none"


def identity(provenance: dict) -> dict:
    return {k: provenance.get(k) for k in PROVENANCE_KEYS}


def _write_bag(group: h5py.Group, bag: PatientBag, dim: int, dtype: str) -> None:
    embeddings = np.asarray(bag.embeddings, dtype=dtype).reshape(-1, dim)
    group.create_dataset("embeddings", data=embeddings)
    group.create_dataset("filenames", data=np.array(bag.filenames, dtype=object), dtype=_STR)
    group.attrs["split"] = bag.split
    group.attrs["n_cells"] = len(bag.filenames)
    group.attrs["skipped"] = json.dumps(bag.skipped)
    group.attrs["note"] = bag.note


def _read_bag(group: h5py.Group, patient_id: str) -> PatientBag:
    return PatientBag(
        patient_id=patient_id,
        split=str(group.attrs["split"]),
        embeddings=group["embeddings"][()],
        filenames=[s.decode() if isinstance(s, bytes) else str(s) for s in group["filenames"][()]],
        skipped=json.loads(group.attrs["skipped"]),
        note=str(group.attrs.get("note", "")),
    )


@contextlib.contextmanager
def exclusive_lock(out: Path):
    """Refuse a second extraction into the same file while one runs."""
    lock_path = Path(f"{out}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InputError(f"{out}: another extraction is writing this file ({holder}); refusing to run beside it") from None
        try:  # the holder we waited on may have removed the file: then our lock is on a dead inode, retry
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()  # while still locked, so no newcomer can lock this inode and believe it current
        handle.close()


def parts_path(out: Path) -> Path:
    return Path(f"{out}.parts")


class PartsFolder:
    """Finished patients of an extraction in progress: `<out>.parts/<ID>.h5`, plus the settings they share."""

    def __init__(self, out: Path, provenance: dict, dim: int, dataset: dict):
        """`dataset` names what is being extracted (root, patient-list hash): parts are named by patient ID, so
        parts of another dataset with the same IDs must never be taken for this one's."""
        self.path = parts_path(out)
        self.provenance = provenance
        self.dim = dim
        settings = self.path / "settings.json"
        if settings.exists():
            previous = json.loads(settings.read_text())
            if identity(previous) != identity(provenance):
                raise InputError(
                    f"{self.path}: an interrupted extraction with other settings is here "
                    f"({describe_provenance_difference(previous, provenance)}); rerun it with its own settings to "
                    f"finish it, or pass --overwrite to discard it, or choose another --out"
                )
            if previous.get("dataset") != dataset:
                raise InputError(
                    f"{self.path}: an interrupted extraction of another dataset is here "
                    f"({previous.get('dataset', {}).get('root')}); pass --overwrite to discard it, or choose another --out"
                )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(settings, json.dumps({**provenance, "dataset": dataset}, indent=1, sort_keys=True))

    def part(self, patient_id: str) -> Path:
        return self.path / f"{patient_id}.h5"

    def has(self, patient_id: str) -> bool:
        return self.part(patient_id).is_file()

    def write(self, bag: PatientBag) -> None:
        final = self.part(bag.patient_id)
        tmp = final.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as handle:
            _write_bag(handle.create_group("bag"), bag, self.dim, self.provenance["dtype"])
        fsync_file(tmp)
        os.replace(tmp, final)

    def read(self, patient_id: str) -> PatientBag:
        with h5py.File(self.part(patient_id), "r") as handle:
            return _read_bag(handle["bag"], patient_id)

    def assemble(self, out: Path, patient_ids: list[str], file_attrs: dict) -> dict:
        """Write the final file from the parts (temporary name, then rename) and remove the parts."""
        tmp = Path(f"{out}.tmp")
        tmp.unlink(missing_ok=True)  # a previous assembly killed half-way
        totals = {"n_patients": 0, "n_images": 0, "n_skipped": 0}
        with h5py.File(tmp, "w") as handle:
            patients = handle.create_group("patients")
            for patient_id in patient_ids:
                bag = self.read(patient_id)
                _write_bag(patients.create_group(patient_id), bag, self.dim, self.provenance["dtype"])
                totals["n_patients"] += 1
                totals["n_images"] += len(bag.filenames)
                totals["n_skipped"] += len(bag.skipped)
            for key, value in {**self.provenance, **file_attrs, **totals}.items():
                handle.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses (TorchVersion)
            handle.attrs["format"] = FORMAT
            handle.attrs["complete"] = True
        fsync_file(tmp)
        os.replace(tmp, out)
        shutil.rmtree(self.path)
        return totals

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
            bags = {pid: _read_bag(group, pid) for pid, group in handle["patients"].items()}
        except (KeyError, OSError, ValueError) as exc:
            raise InputError(f"{path}: damaged embeddings file ({exc}); re-extract it") from None
    return provenance, bags
