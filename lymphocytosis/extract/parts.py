"""An extraction in progress: one small HDF5 per finished patient, and the lock that keeps writers apart.

Each finished patient is its own file under `<out>.parts/`, written to a temporary name and renamed into place
(as STAMP does), so a kill at any moment loses at most the patient in progress and never leaves a truncated
part that looks finished. The final file is assembled the same way (temporary name, then rename), and only
then is the parts folder removed. An exclusive `flock` on `<out>.lock` refuses a second writer; the kernel
drops it when the process dies, so a kill never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

import h5py

from ..errors import InputError
from ..files import atomic_output, atomic_write_text
from ..provenance import require_same
from .store import PatientBag, read_bag, write_bag, write_file_attrs


@contextlib.contextmanager
def exclusive_lock(out: Path):
    """Refuse a second extraction into the same file while one runs."""
    lock_path = Path(f"{out}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held open while the lock is held, closed below
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
            require_same(previous, provenance, f"{self.path}: an interrupted extraction with other settings is here",
                         "rerun it with its own settings to finish it, or pass --overwrite to discard it, "
                         "or choose another --out")
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
        with atomic_output(self.part(bag.patient_id)) as tmp, h5py.File(tmp, "w") as handle:
            write_bag(handle.create_group("bag"), bag, self.dim, self.provenance["dtype"])

    def read(self, patient_id: str) -> PatientBag:
        with h5py.File(self.part(patient_id), "r") as handle:
            return read_bag(handle["bag"], patient_id)

    def assemble(self, out: Path, patient_ids: list[str], file_attrs: dict) -> dict:
        """Write the final file from the parts (temporary name, then rename) and remove the parts."""
        totals = {"n_patients": 0, "n_images": 0, "n_skipped": 0}
        with atomic_output(out) as tmp, h5py.File(tmp, "w") as handle:
            patients = handle.create_group("patients")
            for patient_id in patient_ids:
                bag = self.read(patient_id)
                write_bag(patients.create_group(patient_id), bag, self.dim, self.provenance["dtype"])
                totals["n_patients"] += 1
                totals["n_images"] += len(bag.filenames)
                totals["n_skipped"] += len(bag.skipped)
            write_file_attrs(handle, {**self.provenance, **file_attrs, **totals})
        shutil.rmtree(self.path)
        return totals
