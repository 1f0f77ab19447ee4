"""Turning claimed patients' image files into tensors, in DataLoader worker processes when there are several.

The dataset is iterable: each process that iterates it (the main process, or each DataLoader worker) claims
the next patient nobody holds, decodes its images and yields them; so several extraction processes, and the
decoding processes of each, share the work without a central scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .images import DECODE_ERRORS, FolderScan, decode_failure, load_rgb
from .layout import PatientEntry
from .parts import PartsFolder
from .preprocessing import Preprocessing, build_transform
from .workers import Claims


@dataclass
class DecodedPatient:
    """One patient's images as a batch tensor, in file-name order, and the files that could not be used."""

    patient: PatientEntry
    scan: FolderScan
    images: torch.Tensor  # (n, 3, H, W)
    names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}

    def pin_memory(self) -> DecodedPatient:
        return replace(self, images=self.images.pin_memory())


def decode(patient: PatientEntry, scan: FolderScan, transform, input_size: int) -> DecodedPatient:
    tensors, names, skipped = [], [], list(scan.skipped)
    for path in scan.images:
        try:
            tensors.append(transform(load_rgb(path)))
            names.append(path.name)
        except DECODE_ERRORS as exc:
            skipped.append(decode_failure(path, exc))
    batch = torch.stack(tensors) if tensors else torch.empty(0, 3, input_size, input_size)
    return DecodedPatient(patient, scan, batch, names, skipped)


class ClaimedPatients(torch.utils.data.IterableDataset):
    """Yields the decoded images of each patient of `todo` that this worker claims and nobody has finished."""

    def __init__(self, todo: list[PatientEntry], scans: dict[str, FolderScan], parts: PartsFolder, claims: Claims,
                 prep: Preprocessing):
        self.todo, self.scans, self.parts, self.claims, self.prep = todo, scans, parts, claims, prep

    def done(self, patient: PatientEntry) -> bool:
        return self.parts.listing(patient.patient_id) == self.scans[patient.patient_id].fingerprint

    def __iter__(self):
        """Each decoding process takes its own share of the list (one patient never goes to two of them: they
        claim under the same worker id), in CSV order."""
        transform = build_transform(self.prep)
        info = torch.utils.data.get_worker_info()
        share = self.todo if info is None else self.todo[info.id::info.num_workers]
        for patient in share:
            if self.done(patient) or not self.claims.take(patient.patient_id):
                continue
            if self.done(patient):  # finished by another worker between our check and our claim
                self.claims.release(patient.patient_id)
                continue
            yield decode(patient, self.scans[patient.patient_id], transform, self.prep.input_size)
