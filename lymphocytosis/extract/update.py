"""Rerunning an extraction: what the output file may be, and which patients must be embedded (again).

`--out` is replaced only when it is an embeddings file of this tool, never another file (a CSV, an image, a
model). A previous extraction with the same settings is updated, not redone, by content, not by path: patients
whose images changed (added, removed, replaced: their names and bytes) or who are new are embedded, changed
CSV rows are recorded without re-embedding, patients gone from the CSVs are dropped; each is said. So a
dataset copied or moved elsewhere reuses every embedding of unchanged images (they would be bit-identical).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py

from ..contract.images import FolderScan
from ..contract.integrity import has_digest
from ..contract.layout import PatientEntry
from ..contract.provenance import describe_difference, same
from ..contract.store import (
    FORMAT,
    HDF5_ERRORS,
    KNOWN_FORMATS,
    PatientBag,
    check_dimensions,
    is_measurement,
    patient_groups,
    read_attrs,
    read_bag,
)
from ..errors import InputError
from ..files import refuse_inputs_as_outputs
from .parts import PartsFolder

log = logging.getLogger(__name__)


def check_output(out: Path, patients: list[PatientEntry]) -> None:
    """`out` must be a new path or one of our embeddings files, and none of the dataset's files."""
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; give the path of the HDF5 file to write")
    refuse_inputs_as_outputs({"--out": out}, sorted({p.csv_path for p in patients}))
    if out.exists():
        try:
            kind = read_attrs(out).get("format")
        except HDF5_ERRORS:
            kind = None
        if kind not in KNOWN_FORMATS:
            raise InputError(f"--out {out}: exists and is not an embeddings file of this tool; refusing to replace it "
                             "(choose another --out)")


@dataclass
class PreviousExtraction:
    path: Path
    root: str  # the dataset it was made from (resolved path)
    listings: dict[str, str]  # patient -> listing fingerprint when embedded
    rows: dict[str, tuple[str, str]]  # patient -> (split, CSV row fingerprint) when embedded
    n_images: int
    n_skipped: int
    undigested: bool = False  # written before bags carried digests: the rerun rewrites it with them

    def bag(self, patient_id: str) -> PatientBag:
        with h5py.File(self.path, "r") as handle:
            measured = is_measurement({k: str(v) for k, v in handle.attrs.items()})
            return read_bag(handle["patients"][patient_id], patient_id, measured)


def read_previous(out: Path, attrs: dict | None = None) -> PreviousExtraction:
    """The previous file's per-patient record, every bag checked now (its bags are reused at the end); `attrs` are
    the file's attributes when the caller has read them already."""
    patient_id = None
    try:
        attrs = read_attrs(out) if attrs is None else attrs
        size, measured, bags, undigested = out.stat().st_size, is_measurement(attrs), {}, False
        with h5py.File(out, "r") as handle:
            for patient_id, group in patient_groups(handle):
                bags[patient_id] = read_bag(group, patient_id, measured, attrs, size)
                undigested |= not has_digest(group)
            n_images, n_skipped = int(handle.attrs["n_images"]), int(handle.attrs["n_skipped"])
        problem = check_dimensions(attrs, bags) if bags else None
    except (*HDF5_ERRORS, InputError, json.JSONDecodeError) as exc:
        where = f"patient {patient_id}: " if patient_id else ""
        raise InputError(f"{out}: {where}damaged ({str(exc).splitlines()[0]}); pass --overwrite to replace it") from None
    if problem:
        raise InputError(f"{out}: damaged ({problem}); pass --overwrite to replace it")
    listings = {k: bag.listing_sha256 for k, bag in bags.items()}
    rows = {k: (bag.split, bag.row_sha256) for k, bag in bags.items()}
    return PreviousExtraction(out, str(attrs.get("dataset_root", "")), listings, rows, n_images, n_skipped, undigested)


def previous_extraction(out: Path, provenance: dict, root: Path, overwrite: bool) -> PreviousExtraction | None:
    """The earlier extraction in `out` that this run may update, if any. Without --overwrite, a file of another
    format or settings is refused (it may be the result of a long run); with it, it is replaced. A file made
    from another dataset path is updated by content (see `UpdatePlan.check_other_root`)."""
    if not out.exists():
        return None
    attrs = read_attrs(out)
    problem = None
    if attrs.get("format") != FORMAT or attrs.get("complete") is not True:
        problem = "was made by an older version of this tool"
    elif not same(attrs, provenance):
        problem = f"exists with other settings ({describe_difference(attrs, provenance)})"
    if problem is None:
        try:
            return read_previous(out, attrs)
        except InputError:
            if not overwrite:
                raise
            problem = "is damaged"
    if not overwrite:
        raise InputError(f"{out}: {problem}; pass --overwrite to replace it, or choose another --out")
    log.info("%s %s: it will be replaced (--overwrite)", out, problem)
    return None


def names(patients: list, limit: int = 8) -> str:
    shown = ", ".join(p if isinstance(p, str) else p.patient_id for p in patients[:limit])
    return shown + (f" and {len(patients) - limit} more" if len(patients) > limit else "")


@dataclass
class UpdatePlan:
    patients: list[PatientEntry]
    previous: PreviousExtraction | None
    scans: dict[str, FolderScan] = field(default_factory=dict)
    to_embed: list[PatientEntry] = field(default_factory=list)
    changed_rows: list[PatientEntry] = field(default_factory=list)  # CSV row or split changed, same images
    relisted: list[PatientEntry] = field(default_factory=list)  # same images, fingerprint of an earlier version
    removed: list[str] = field(default_factory=list)
    moved: bool = False  # made from another dataset path: the file is rewritten to record this one

    @property
    def nothing_to_do(self) -> bool:
        changes = (self.to_embed or self.changed_rows or self.relisted or self.removed or self.moved
                   or (self.previous is not None and self.previous.undigested))
        return self.previous is not None and not changes

    @property
    def reused(self) -> int:
        return len(self.patients) - len(self.to_embed)

    def check_other_root(self, out: Path, root: Path, overwrite: bool) -> None:
        """A file made from another dataset path is updated only when that loses nothing by mistake: some
        patient's images are the same (a copied or moved dataset), and no patient would be dropped unless
        --overwrite says so (a typo in --out must not empty a file of another dataset)."""
        here = str(Path(root).resolve())
        if self.previous is None or self.previous.root == here:
            return
        if self.reused == 0 or (self.removed and not overwrite):
            why = (f"none of its {len(self.previous.listings)} patients has the same images here" if self.reused == 0
                   else f"{len(self.removed)} of its patients are not in this dataset's CSVs ({names(self.removed)})")
            raise InputError(f"{out}: was made from another dataset ({self.previous.root}) and {why}; pass --overwrite "
                             "to replace it, or choose another --out")
        self.moved = True
        log.warning("%s: made from %s; the same images for %d of %d patients here: their embeddings are reused, and "
                    "the file will name this dataset", out, self.previous.root, self.reused, len(self.patients))

    def log(self, out: Path) -> None:
        if self.previous is None:
            return
        if self.previous.undigested:
            log.warning("%s: written before each patient's embeddings carried a digest: adding them (nothing is "
                        "embedded again for that)", out)
        held = self.previous.listings
        changed = [p for p in self.to_embed if p.patient_id in held]
        new = [p for p in self.to_embed if p.patient_id not in held]
        for items, what in ((changed, "images changed since it was made (added, removed or replaced): embedding "
                                      "them again"), (new, "new patients: embedding them"),
                            (self.changed_rows, "CSV rows changed: recorded, images not re-embedded"),
                            (self.relisted, "image fingerprints recorded by content, images not re-embedded"),
                            (self.removed, "no longer in the CSVs: dropped")):
            if items:
                log.warning("%s: %d patients %s: %s", out, len(items), what, names(items))
        log.info("%s: %d patients to embed, %d reused as they are", out, len(self.to_embed), self.reused)

    def bag_source(self, parts: PartsFolder):
        """Where the final file takes each patient's bag from: a new part, or the previous file (with the
        current split and CSV row recorded)."""
        embedded = {p.patient_id for p in self.to_embed}
        entries = {p.patient_id: p for p in self.patients}

        def bag_of(patient_id: str) -> PatientBag:
            entry = entries[patient_id]
            bag = parts.read(patient_id) if patient_id in embedded else self.previous.bag(patient_id)
            listing = self.scans[patient_id].fingerprint if patient_id in self.scans else bag.listing_sha256
            return replace(bag, split=entry.split, row_sha256=entry.row_sha256,  # the CSVs as they are now
                           listing_sha256=listing)  # the images' fingerprint by content

        return bag_of


def plan_update(patients: list[PatientEntry], scans: dict[str, FolderScan], previous: PreviousExtraction | None) -> UpdatePlan:
    plan = UpdatePlan(patients, previous, scans)
    if previous is None:
        plan.to_embed = list(patients)
        return plan
    for p in patients:
        scan, held = scans[p.patient_id], previous.listings.get(p.patient_id)
        if held not in (scan.fingerprint, scan.legacy_fingerprint):
            plan.to_embed.append(p)
        elif previous.rows[p.patient_id] != (p.split, p.row_sha256):
            plan.changed_rows.append(p)
        elif held != scan.fingerprint:
            plan.relisted.append(p)
    current = {p.patient_id for p in patients}
    plan.removed = sorted(k for k in previous.listings if k not in current)
    return plan
