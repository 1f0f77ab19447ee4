"""Turning claimed patients' image files into per-cell inputs, in DataLoader worker processes when there are several.

The dataset is iterable: each process that iterates it (the main process, or each DataLoader worker) claims
the next patient nobody holds, decodes its images and yields them; so several extraction processes, and the
decoding processes of each, share the work without a central scheduler. What each image becomes is the
decoder's business: the network's input tensor (embedding), or a vector of measured quantities (measuring).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from ..augmentation import random_view
from ..contract.images import DECODE_ERRORS, FolderScan, decode_failure, load_rgb
from ..contract.layout import PatientEntry
from .parts import PartsFolder
from .preprocessing import Preprocessing, build_transform
from .workers import Claims

log = logging.getLogger(__name__)


@dataclass
class DecodedPatient:
    """One patient's decoded images (a batch tensor, or an array of measurements), in file-name order, and the
    files that could not be used."""

    patient: PatientEntry
    scan: FolderScan
    images: torch.Tensor | np.ndarray  # (n, ...)
    names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}

    def pin_memory(self) -> DecodedPatient:
        return replace(self, images=self.images.pin_memory()) if isinstance(self.images, torch.Tensor) else self


class NetworkInput:
    """Image -> the network's normalised input tensor (built once per process: transforms hold no state)."""

    def __init__(self, prep: Preprocessing):
        self.prep = prep
        self.transform = None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.transform is None:
            self.transform = build_transform(self.prep)
        return self.transform(image)

    def stack(self, outputs: list) -> torch.Tensor:
        size = self.prep.input_size
        return torch.stack(outputs) if outputs else torch.empty(0, 3, size, size)


class ViewInput(NetworkInput):
    """Image -> the network's input for its training view (augmentation.random_view, drawn from the image's own
    pixels and `seed`: the same view whichever process decodes it)."""

    def __init__(self, prep: Preprocessing, seed: int):
        super().__init__(prep)
        self.seed = seed

    def __call__(self, image: Image.Image) -> torch.Tensor:
        try:
            view = random_view(image, self.seed)
        except (ValueError, OSError) as exc:  # an image the embeddings' pass read: its view must not be missing
            log.warning("a training view could not be made (%s): the cell itself stands in for it", exc)
            view = image
        return super().__call__(view)


def decode(patient: PatientEntry, scan: FolderScan, decoder) -> DecodedPatient:
    outputs, names, skipped = [], [], list(scan.skipped)
    for path in scan.images:
        try:
            outputs.append(decoder(load_rgb(path)))
            names.append(path.name)
        except DECODE_ERRORS as exc:
            skipped.append(decode_failure(path, exc))
    return DecodedPatient(patient, scan, decoder.stack(outputs), names, skipped)


class ClaimedPatients(torch.utils.data.IterableDataset):
    """Yields the decoded images of each patient of `todo` that this worker claims and nobody has finished."""

    def __init__(self, todo: list[PatientEntry], scans: dict[str, FolderScan], parts: PartsFolder, claims: Claims,
                 decoder):
        self.todo, self.scans, self.parts, self.claims, self.decoder = todo, scans, parts, claims, decoder

    def done(self, patient: PatientEntry) -> bool:
        return self.parts.listing(patient.patient_id) == self.scans[patient.patient_id].fingerprint

    def __iter__(self):
        """Each decoding process takes its own share of the list (one patient never goes to two of them: they
        claim under the same worker id), in CSV order."""
        info = torch.utils.data.get_worker_info()
        share = self.todo if info is None else self.todo[info.id::info.num_workers]
        for patient in share:
            if self.done(patient) or not self.claims.take(patient.patient_id):
                continue
            if self.done(patient):  # finished by another worker between our check and our claim
                self.claims.release(patient.patient_id)
                continue
            yield decode(patient, self.scans[patient.patient_id], self.decoder)
