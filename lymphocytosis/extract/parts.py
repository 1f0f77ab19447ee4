"""An extraction in progress: one small HDF5 per finished patient, shared by every worker on the output.

Each finished patient is its own file under `<out>.parts/`, written to a temporary name and renamed into place
(as STAMP does), so a kill at any moment loses at most the patient in progress and never leaves a truncated
part that looks finished. A part records the fingerprint of the folder listing it was made from, so a part
whose images changed since is embedded again. The final file is assembled the same way (temporary name,
then rename), and only then is the parts folder removed. Which worker embeds which patient: see workers.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import h5py

from ..contract.provenance import describe_difference, identity, same
from ..contract.store import HDF5_ERRORS, PatientBag, is_measurement, read_bag, write_bag, write_file_attrs
from ..errors import InputError
from ..files import atomic_hdf5, foreign_entries, temporary_sibling
from .workers import HEARTBEAT_TIMEOUT

log = logging.getLogger(__name__)


def parts_path(out: Path) -> Path:
    return Path(f"{out}.parts")


class PartsRemoved(InputError):
    """The parts folder is gone: another worker assembled the final file (or another run discarded it)."""


def refuse_foreign_parts(path: Path) -> None:
    """--overwrite discards an interrupted extraction's parts folder, never a folder of the user's that happens to
    carry its name."""
    from ..output_kinds import PARTS_ENTRIES

    foreign = foreign_entries(path, "parts", PARTS_ENTRIES) if path.is_dir() and not path.is_symlink() else [path.name]
    if foreign:
        raise InputError(f"{path}: not an interrupted extraction of this tool (holds {', '.join(foreign[:5])}); "
                         "--overwrite discards only those: move it away, or choose another --out")


def read_settings(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


class PartsFolder:
    """Finished patients of an extraction in progress: `<out>.parts/<ID>.h5`, plus the settings they share. Several
    workers may open it at once: the first to publish settings.json fixes them, the others check theirs agree."""

    def __init__(self, out: Path, provenance: dict, dim: int, root: Path, discard_other: bool = False):
        """Parts are named by patient ID: those of another dataset root or other settings are never taken for
        this run's. Such a folder is refused, or with `discard_other` (--overwrite) discarded; parts made with
        these settings are always kept, so an interrupted --overwrite run resumes too."""
        self.path = parts_path(out)
        self.provenance = provenance
        self.dim = dim
        self.root = str(Path(root).resolve())
        self.settings = {**identity(provenance), "dim": dim, "root": self.root}
        self.digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        problem = self.incompatibility(self.published()) if self.path.exists() else None
        if problem and self.running():
            raise InputError(f"{self.path}: another extraction {problem} is running here (its heartbeat is fresh); "
                             "wait for it, or choose another --out")
        if problem and not discard_other:
            raise InputError(f"{self.path}: an interrupted extraction {problem} is here; rerun it with its own "
                             "settings to finish it, or pass --overwrite to discard it, or choose another --out")
        if problem:
            refuse_foreign_parts(self.path)
            log.info("%s: discarding an interrupted extraction %s (--overwrite)", self.path, problem)
            self.discard()
        self.path.mkdir(parents=True, exist_ok=True)
        problem = self.incompatibility(self.publish())
        if problem:  # another worker published other settings in between
            raise InputError(f"{self.path}: another extraction {problem} is running here; choose another --out")

    def running(self) -> bool:
        """Does any worker's heartbeat in this folder look fresh (see workers.py)?"""
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            return any(now - p.stat().st_mtime < HEARTBEAT_TIMEOUT for p in (self.path / "workers").iterdir())
        return False

    def published(self, wait: float = 10.0) -> dict | None:
        """The settings another worker published; a folder just created may need a moment to get them."""
        deadline = time.monotonic() + wait
        while True:
            document = read_settings(self.path / "settings.json")
            if document is not None or time.monotonic() > deadline or not self.path.exists():
                return document
            time.sleep(0.2)

    def publish(self) -> dict | None:
        """Write settings.json unless it exists (link: atomic and exclusive); return what is published."""
        final = self.path / "settings.json"
        if not final.exists():
            tmp = temporary_sibling(final)
            try:
                tmp.write_text(json.dumps(self.settings, indent=1))
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
        return self.published()

    def discard(self) -> None:
        """Move the folder away atomically, then delete it: two workers discarding at once cannot delete the
        fresh folder that one of them has just made."""
        graveyard = self.path.with_name(f".{self.path.name}.discarded-{os.getpid()}-{time.monotonic_ns()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, graveyard)
            shutil.rmtree(graveyard, ignore_errors=True)

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
        """The folder fingerprint a finished part of these settings was made from; None when there is none."""
        if not self.part(patient_id).is_file():
            return None
        try:
            with h5py.File(self.part(patient_id), "r") as handle:
                attrs = handle["bag"].attrs
                return str(attrs["listing_sha256"]) if attrs.get("parts_settings") == self.digest else None
        except HDF5_ERRORS:
            return None  # a damaged part is simply made again

    def write(self, bag: PatientBag) -> None:
        if not self.path.is_dir():  # never recreate a folder another run finished or discarded
            raise PartsRemoved(f"{self.path}: removed by another extraction while this one ran; rerun the command")
        with atomic_hdf5(self.part(bag.patient_id)) as handle:
            write_bag(handle.create_group("bag"), bag, self.dim, self.provenance["dtype"])
            handle["bag"].attrs["parts_settings"] = self.digest

    def read(self, patient_id: str) -> PatientBag:
        with h5py.File(self.part(patient_id), "r") as handle:
            return read_bag(handle["bag"], patient_id, is_measurement(self.provenance))


def assemble(out: Path, patient_ids: list[str], bag_of: Callable[[str], PatientBag], dim: int, provenance: dict,
             file_attrs: dict) -> dict:
    """Write the final file (temporary name, then rename) from each patient's bag; returns the totals."""
    totals = {"n_patients": 0, "n_images": 0, "n_skipped": 0}
    with atomic_hdf5(out) as handle:
        patients = handle.create_group("patients")
        for patient_id in patient_ids:
            bag = bag_of(patient_id)
            write_bag(patients.create_group(patient_id), bag, dim, provenance["dtype"], {**provenance, "dim": int(dim)})
            totals["n_patients"] += 1
            totals["n_images"] += len(bag.filenames)
            totals["n_skipped"] += len(bag.skipped)
        write_file_attrs(handle, {**provenance, **file_attrs, **totals, "dim": int(dim)})
    return totals
