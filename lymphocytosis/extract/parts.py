"""An extraction in progress: one small HDF5 per finished patient, and the lock that keeps writers apart.

Each finished patient is its own file under `<out>.parts/`, written to a temporary name and renamed into place
(as STAMP does), so a kill at any moment loses at most the patient in progress and never leaves a truncated
part that looks finished. A part records the fingerprint of the folder listing it was made from, so a part
whose images changed since is embedded again. The final file is assembled the same way (temporary name,
then rename), and only then is the parts folder removed. An exclusive `flock` on `<out>.lock` refuses a
second writer; the kernel drops it when the process dies, so a kill never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py

from ..errors import InputError
from ..files import atomic_hdf5, atomic_write_text
from ..provenance import describe_difference, identity, same
from .store import HDF5_ERRORS, PatientBag, read_bag, write_bag, write_file_attrs

log = logging.getLogger(__name__)


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


def read_settings(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


class PartsFolder:
    """Finished patients of an extraction in progress: `<out>.parts/<ID>.h5`, plus the settings they share."""

    def __init__(self, out: Path, provenance: dict, dim: int, root: Path, discard_other: bool = False):
        """Parts are named by patient ID: those of another dataset root or other settings are never taken for
        this run's. Such a folder is refused, or with `discard_other` (--overwrite) discarded; parts made with
        these settings are always kept, so an interrupted --overwrite run resumes too."""
        self.path = parts_path(out)
        self.provenance = provenance
        self.dim = dim
        self.root = str(Path(root).resolve())
        settings = self.path / "settings.json"
        if self.path.exists():
            previous = read_settings(settings)
            problem = self.incompatibility(previous)
            if problem and not discard_other:
                raise InputError(f"{self.path}: an interrupted extraction {problem} is here; rerun it with its own "
                                 "settings to finish it, or pass --overwrite to discard it, or choose another --out")
            if problem:
                log.info("%s: discarding an interrupted extraction %s (--overwrite)", self.path, problem)
                shutil.rmtree(self.path)
        if not self.path.exists():
            self.path.mkdir(parents=True)
            atomic_write_text(settings, json.dumps({**identity(provenance), "dim": dim, "root": self.root}, indent=1))

    def incompatibility(self, previous: dict | None) -> str | None:
        if previous is None:
            return "with unreadable settings"
        if not same(previous, self.provenance):
            return f"with other settings ({describe_difference(previous, self.provenance)})"
        if previous.get("dim") != self.dim:
            return f"with other settings (dimension {previous.get('dim')} vs {self.dim})"
        if previous.get("root") != self.root:
            return f"of another dataset ({previous.get('root')})"
        return None

    def part(self, patient_id: str) -> Path:
        return self.path / f"{patient_id}.h5"

    def listing(self, patient_id: str) -> str | None:
        """The folder fingerprint a finished part was made from; None when there is no readable part."""
        if not self.part(patient_id).is_file():
            return None
        try:
            with h5py.File(self.part(patient_id), "r") as handle:
                return str(handle["bag"].attrs["listing_sha256"])
        except HDF5_ERRORS:
            return None  # a damaged part is simply made again

    def write(self, bag: PatientBag) -> None:
        with atomic_hdf5(self.part(bag.patient_id)) as handle:
            write_bag(handle.create_group("bag"), bag, self.dim, self.provenance["dtype"])

    def read(self, patient_id: str) -> PatientBag:
        with h5py.File(self.part(patient_id), "r") as handle:
            return read_bag(handle["bag"], patient_id)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def assemble(out: Path, patient_ids: list[str], bag_of: Callable[[str], PatientBag], dim: int, provenance: dict,
             file_attrs: dict) -> dict:
    """Write the final file (temporary name, then rename) from each patient's bag; returns the totals."""
    totals = {"n_patients": 0, "n_images": 0, "n_skipped": 0}
    with atomic_hdf5(out) as handle:
        patients = handle.create_group("patients")
        for patient_id in patient_ids:
            bag = bag_of(patient_id)
            write_bag(patients.create_group(patient_id), bag, dim, provenance["dtype"])
            totals["n_patients"] += 1
            totals["n_images"] += len(bag.filenames)
            totals["n_skipped"] += len(bag.skipped)
        write_file_attrs(handle, {**provenance, **file_attrs, **totals})
    return totals
