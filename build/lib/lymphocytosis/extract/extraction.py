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
from ..errors import InputError
from .backbones import load_backbone
from .embedder import Embedder, resolve_device
from .images import scan_folder
from .job import Job, embed_all, finish
from .layout import discover_patients
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


def extract(root: Path, out: Path, settings: ExtractSettings, overwrite: bool = False) -> ExtractionSummary:
    """Embed every patient of the dataset at `root` into `out` (only those whose images changed, when `out`
    holds an earlier extraction with the same settings). Several processes may run this on the same `out`
    at once: they share the patients, and the last to finish writes the file (see workers.py)."""
    root, out = Path(root), Path(out)
    settings.validate()
    patients = discover_patients(root)
    if not patients:
        raise InputError(f"{root}: the CSVs list no patient; nothing to extract")
    check_output(out, patients)
    device = resolve_device(settings.device)
    model, weights = load_backbone(settings.model, settings.weights)
    prep = resolve_preprocessing(model, settings.crop, settings.input_size)
    provenance = build_provenance(settings, weights, prep)
    previous = previous_extraction(out, provenance, root, overwrite)
    scans = {p.patient_id: scan_folder(p.folder, root) for p in patients}
    plan = plan_update(patients, scans, previous)
    if plan.nothing_to_do:
        log.info("%s: already complete with these settings, images and CSV rows (%d patients); nothing to do",
                 out, len(patients))
        return ExtractionSummary(out, len(patients), previous.n_images, previous.n_skipped, already_complete=True)
    plan.log(out)
    embedder = Embedder(model, device, settings.precision, settings.tta, settings.batch_size, settings.features)
    parts = PartsFolder(out, provenance, embedder.dim, root, discard_other=overwrite)
    worker = worker_id()
    with Heartbeat(parts.path, worker):
        job = Job(plan, scans, parts, Claims(parts.path, worker))
        if len(job.remaining()) < len(plan.to_embed):
            log.info("resuming: %d of %d patients already done in %s", len(plan.to_embed) - len(job.remaining()),
                     len(plan.to_embed), parts.path)
        started = time.perf_counter()
        workers = settings.workers if settings.workers is not None else default_workers(device)
        n_images = embed_all(job, prep, embedder, workers)
        seconds = time.perf_counter() - started
        file_attrs = {"dataset_root": str(root.resolve()), "timm_version": timm.__version__,
                      "torch_version": torch.__version__, "tool_version": __version__, "device": device.type,
                      "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        totals = finish(job, out, plan.bag_source(parts), embedder.dim, provenance, file_attrs)
    rate = n_images / seconds if seconds > 0 else float("nan")
    log.info("wrote %s: %d patients, %d images, %d skipped; this worker embedded %d images in %.1fs (%.1f img/s)",
             out, totals["n_patients"], totals["n_images"], totals["n_skipped"], n_images, seconds, rate)
    return ExtractionSummary(out, **totals, seconds=seconds, images_per_second=rate)
