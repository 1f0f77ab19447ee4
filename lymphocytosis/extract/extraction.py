"""Stage 1: embed every cell image of every patient, resumably.

Patients are the unit of work: a DataLoader worker decodes one patient's images while the model embeds the
previous one, and a patient's embeddings are computed in fixed chunks of `batch_size`, so an interrupted
and resumed run produces exactly the embeddings of an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from .. import __version__
from ..contract.images import scan_folder
from ..contract.layout import discover_patients
from ..errors import InputError
from .backbones import load_backbone
from .decoding import NetworkInput
from .embedder import Embedder, resolve_device
from .job import Job, embed_all, finish
from .parts import PartsFolder
from .preprocessing import Preprocessing, resolve_preprocessing
from .update import check_output, plan_update, previous_extraction
from .workers import Claims, Heartbeat, worker_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSettings:
    model: str
    weights: str | None
    crop: int | None  # None: the model's default (112 px; 224 for registered encoders such as dinobloom-s)
    input_size: int | None
    tta: bool
    precision: str  # "fp32" or "bf16" (autocast)
    dtype: str  # storage: "float32" or "float16"
    batch_size: int
    workers: int | None  # None: 0 on CPU, min(8, cores - 1) on CUDA
    device: str  # "auto", "cpu", "cuda"
    features: str = "pooled"  # "pooled" (the model's pooled features) or "multiscale" (+ pooled intermediate stages)
    stain: str = "none"  # stain control before the crop (stain.py): none, grayscale, reinhard, slide

    def validate(self) -> None:
        if self.precision not in {"fp32", "bf16"}:
            raise InputError(f"--precision {self.precision}: expected fp32 or bf16")
        if self.dtype not in {"float32", "float16"}:
            raise InputError(f"--dtype {self.dtype}: expected float32 or float16")
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")


@dataclass(frozen=True)
class ExtractionSummary:
    out: Path
    n_patients: int
    n_images: int
    n_skipped: int
    seconds: float = 0.0
    images_per_second: float = float("nan")
    already_complete: bool = False


def build_provenance(settings: ExtractSettings, weights, prep: Preprocessing) -> dict:
    return {
        "model": settings.model,
        "weights_source": weights.source,
        "weights_sha256": weights.sha256,
        "weights_file_sha256": weights.file_sha256,  # recorded, not compared: weights_sha256 already identifies them
        "features": settings.features,
        "preprocessing": prep.to_json(),
        "tta": "dihedral8" if settings.tta else "none",
        "precision": settings.precision,
        "dtype": settings.dtype,
    }


def default_workers(device: torch.device) -> int:
    """0 on CPU (decoding beside the model's threads was measured slower there), up to 8 on CUDA."""
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class Stage:
    """What a run computes for every cell: a file's provenance and width, how an image is decoded for it, what
    turns decoded images into per-cell rows (the network, or nothing more for measurements), and its workers."""

    provenance: dict
    dim: int
    decoder: object  # image -> one cell's input; `.stack(list)` makes the patient's batch (decoding.NetworkInput)
    processor: object  # `.embed_group(batches, ids) -> rows per patient`, `.device`, `.batch_size` (Embedder)
    workers: int
    file_attrs: dict
    verb: str = "embedding"


def run_stage(root: Path, out: Path, patients: list, stage: Stage, overwrite: bool,
              follow_links: bool = True) -> ExtractionSummary:
    """Fill `out` with a row per cell of every patient: the update plan, the shared parts folder, this worker's
    share, and the final file (see job.py, workers.py, update.py)."""
    previous = previous_extraction(out, stage.provenance, root, overwrite)
    scans = {p.patient_id: scan_folder(p.folder, root, follow_links) for p in patients}
    plan = plan_update(patients, scans, previous)
    if plan.nothing_to_do:
        log.info("%s: already complete with these settings, images and CSV rows (%d patients); nothing to do",
                 out, len(patients))
        return ExtractionSummary(out, len(patients), previous.n_images, previous.n_skipped, already_complete=True)
    plan.log(out)
    parts = PartsFolder(out, stage.provenance, stage.dim, root, discard_other=overwrite)
    worker = worker_id()
    with Heartbeat(parts.path, worker):
        job = Job(plan, scans, parts, Claims(parts.path, worker))
        if len(job.remaining()) < len(plan.to_embed):
            log.info("resuming: %d of %d patients already done in %s", len(plan.to_embed) - len(job.remaining()),
                     len(plan.to_embed), parts.path)
        started = time.perf_counter()
        n_images = embed_all(job, stage.decoder, stage.processor, stage.workers, stage.verb)
        seconds = time.perf_counter() - started
        file_attrs = {"dataset_root": str(root.resolve()), "tool_version": __version__, **stage.file_attrs,
                      "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        totals = finish(job, out, plan.bag_source(parts), stage.dim, stage.provenance, file_attrs)
    rate = n_images / seconds if seconds > 0 else float("nan")
    log.info("wrote %s: %d patients, %d images, %d skipped; this worker %s %d images in %.1fs (%.1f img/s)",
             out, totals["n_patients"], totals["n_images"], totals["n_skipped"], stage.verb.replace("ing", "ed"),
             n_images, seconds, rate)
    return ExtractionSummary(out, **totals, seconds=seconds, images_per_second=rate)


def checked_patients(root: Path, out: Path) -> list:
    patients = discover_patients(root)
    if not patients:
        raise InputError(f"{root}: the CSVs list no patient; nothing to extract")
    check_output(out, patients)
    return patients


def extract(root: Path, out: Path, settings: ExtractSettings, overwrite: bool = False,
            follow_links: bool = True) -> ExtractionSummary:
    """Embed every patient of the dataset at `root` into `out` (only those whose images changed, when `out`
    holds an earlier extraction with the same settings). Several processes may run this on the same `out`
    at once: they share the patients, and the last to finish writes the file (see workers.py)."""
    root, out = Path(root), Path(out)
    settings.validate()
    patients = checked_patients(root, out)
    device = resolve_device(settings.device)
    model, weights = load_backbone(settings.model, settings.weights)
    prep = resolve_preprocessing(model, settings.crop, settings.input_size, settings.stain)
    embedder = Embedder(model, device, settings.precision, settings.tta, settings.batch_size, settings.features)
    workers = settings.workers if settings.workers is not None else default_workers(device)
    file_attrs = {"timm_version": timm.__version__, "torch_version": torch.__version__, "device": device.type}
    stage = Stage(build_provenance(settings, weights, prep), embedder.dim, NetworkInput(prep), embedder, workers,
                  file_attrs)
    return run_stage(root, out, patients, stage, overwrite, follow_links)
