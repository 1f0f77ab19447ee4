"""One worker's part in an extraction: embed what it can claim, wait for what others hold, and let the last one
write the final file (see workers.py for the claims)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from ..contract.images import FolderScan
from ..contract.layout import PatientEntry
from ..contract.provenance import describe_difference, same
from ..contract.store import PatientBag, read_provenance
from ..errors import InputError
from ..progress import Progress
from .decoding import ClaimedPatients, DecodedPatient
from .parts import PartsFolder, PartsRemoved, assemble
from .update import UpdatePlan
from .workers import ASSEMBLY, Claims

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class CellDecoder(Protocol):
    """Image -> one cell's input, in a decoding worker (decoding.NetworkInput: a tensor; measuring.Measurement:
    the measured vector); `stack` makes a patient's batch of them."""

    def __call__(self, image: Image.Image) -> Any: ...

    def stack(self, outputs: list) -> Any: ...


class RowMaker(Protocol):
    """Decoded patients -> one array of per-cell rows each (embedder.Embedder runs the network; measuring.AsMeasured
    keeps the measured vectors). `pack_size`: images per shared batch when patients are packed together (a GPU,
    kept busy on small bags; decoded batches then go to pinned memory); None: one patient at a time."""

    @property
    def pack_size(self) -> int | None: ...

    def embed_group(self, batches: list, patient_ids: list[str]) -> list[np.ndarray]: ...


@dataclass
class Job:
    plan: UpdatePlan
    scans: dict[str, FolderScan]
    parts: PartsFolder
    claims: Claims
    finished: set[str] = field(default_factory=set)

    def remaining(self) -> list[PatientEntry]:
        """Patients of the plan without a part of their current listing (made by any worker)."""
        for patient in self.plan.to_embed:
            pid = patient.patient_id
            if pid not in self.finished and self.parts.listing(pid) == self.scans[pid].fingerprint:
                self.finished.add(pid)
        return [p for p in self.plan.to_embed if p.patient_id not in self.finished]

    def images(self, patients) -> int:
        return sum(len(self.scans[p.patient_id].images) for p in patients)

    def progress(self, bar) -> None:
        """The bar counts the whole dataset: images embedded by every worker."""
        remaining = self.remaining()
        bar.n = self.images(self.plan.to_embed) - self.images(remaining)
        bar.refresh()


def log_patient(patient: PatientEntry, note: str, skipped: list[dict]) -> None:
    if note:
        log.warning("patient %s: %s (%s); recorded with 0 cells", patient.patient_id, note, patient.folder)
    for item in skipped:
        log.warning("patient %s: skipped image %s (%s)", patient.patient_id, patient.folder / item["file"], item["reason"])


def packed(loader, pack_size: int | None):
    """Groups of decoded patients: one at a time (None), or (on a GPU) enough patients to fill `pack_size` images."""
    group, size = [], 0
    for decoded in loader:
        group.append(decoded)
        size += len(decoded.images)
        if pack_size is None or size >= pack_size:
            yield group
            group, size = [], 0
    if group:
        yield group


def write_group(job: Job, group: list[DecodedPatient], features: list[np.ndarray]) -> None:
    for decoded, embeddings in zip(group, features):
        patient, scan = decoded.patient, decoded.scan
        note = scan.note or ("no usable images" if not decoded.names else "")
        log_patient(patient, note, decoded.skipped)
        job.parts.write(PatientBag(patient.patient_id, patient.split, embeddings, decoded.names, decoded.skipped, note,
                                   scan.fingerprint, patient.row_sha256))
        job.claims.release(patient.patient_id)


def embed_pass(job: Job, decoder: CellDecoder, embedder: RowMaker, workers: int, bar) -> int:
    """Embed (or measure) every patient this worker can claim now; returns the number of images done."""
    pack_size = embedder.pack_size
    dataset = ClaimedPatients(job.remaining(), job.scans, job.parts, job.claims, decoder)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pack_size is not None,
                                         prefetch_factor=4 if workers else None, persistent_workers=False)
    embedded = 0
    for group in packed(loader, pack_size):
        features = embedder.embed_group([d.images for d in group], [d.patient.patient_id for d in group])
        write_group(job, group, features)
        embedded += sum(len(d.names) for d in group)
        job.progress(bar)
    return embedded


def embed_all(job: Job, decoder: CellDecoder, embedder: RowMaker, workers: int, verb: str = "embedding",
              progress: Progress = Progress()) -> int:
    """Embed until no patient is left: what this worker claims, then what others held if they stop."""
    embedded = 0
    total = job.images(job.plan.to_embed)
    done_before = total - job.images(job.remaining())  # a resumed run's bar starts there: its rate is this run's
    with progress.bar(total=total, initial=done_before, unit="img", desc=verb) as bar:
        job.progress(bar)
        while True:
            remaining = job.remaining()
            if not remaining or not job.parts.path.exists():  # done, or another worker already wrote the file
                return embedded
            if all(job.claims.held_elsewhere(p.patient_id) for p in remaining):
                time.sleep(POLL_SECONDS)  # others are on them; a claim whose worker stops is taken over
                job.progress(bar)
                continue
            try:
                done = embed_pass(job, decoder, embedder, workers, bar)
            except PartsRemoved:  # paused past the heartbeat, others finished: `finish` checks the final file
                log.info("%s: the other workers finished while this one was paused", job.parts.path)
                return embedded
            if not done and len(job.remaining()) == len(remaining):
                time.sleep(POLL_SECONDS)  # nothing could be claimed after all (a claim judged later): do not spin
            embedded += done


def finish(job: Job, out: Path, bag_of, dim: int, provenance: dict, file_attrs: dict) -> dict:
    """Write the final file if this worker is the one to; else wait for the worker that does. Returns totals."""
    while True:
        if not job.parts.path.exists():  # another worker assembled it
            attrs = read_provenance(out)
            if not same(attrs, provenance):
                raise InputError(f"{out}: replaced by an extraction of other settings while this one ran "
                                 f"({describe_difference(provenance, attrs)}); rerun the command")
            return {k: int(attrs[k]) for k in ("n_patients", "n_images", "n_skipped")}
        if job.claims.take(ASSEMBLY):
            totals = assemble(out, [p.patient_id for p in job.plan.patients], bag_of, dim, provenance, file_attrs)
            job.parts.discard()
            return totals
        time.sleep(POLL_SECONDS)
