"""Stage 1: embed every cell image of every patient, resumably.

Patients are the unit of work: a DataLoader worker decodes one patient's images while the model embeds the
previous one, and a patient's embeddings are computed in fixed chunks of `batch_size`, so an interrupted
and resumed run produces exactly the embeddings of an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import timm
import torch

from .. import __version__, augmentation
from ..contract.images import scan_folder
from ..contract.provenance import TRAINING_VIEW
from ..contract.store import views_path
from ..progress import Progress
from .backbones import load_chosen
from .decoding import NetworkInput, ViewInput
from .embedder import Embedder
from .job import CellDecoder, Job, RowMaker, embed_all, finish
from .parts import PartsFolder
from .plan import EmbeddingPlan, ExtractionPlan, ExtractSettings, checked_patients, plan_embedding
from .preprocessing import Preprocessing, preprocessing_for
from .update import plan_update, previous_extraction
from .workers import Claims, Heartbeat, worker_id

log = logging.getLogger(__name__)
VIEW_SEED = 1  # recorded in the views file's provenance (augmentation.recipe)

__all__ = ["ExtractSettings", "ExtractionSummary", "Stage", "checked_patients", "extract", "run_embedding", "run_stage"]


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
        "features": str(settings.features),  # plain text: HDF5 attributes take no enum
        "preprocessing": prep.to_json(),
        "tta": "dihedral8" if settings.tta else "none",
        "precision": str(settings.precision),
        "dtype": str(settings.dtype),
    }


@dataclass
class Stage:
    """What a run computes for every cell: a file's provenance and width, how an image is decoded for it, what
    turns decoded images into per-cell rows (the network, or nothing more for measurements), and its workers."""

    provenance: dict
    dim: int
    decoder: CellDecoder  # image -> one cell's input; `.stack` makes the patient's batch (decoding.NetworkInput)
    processor: RowMaker  # decoded patients -> their rows (embedder.Embedder, measuring.AsMeasured)
    workers: int
    file_attrs: dict
    verb: str = "embedding"


def run_stage(plan: ExtractionPlan, stage: Stage, progress: Progress = Progress()) -> ExtractionSummary:
    """Fill the plan's output with a row per cell of every patient: the update plan, the shared parts folder, this
    worker's share, and the final file (see job.py, workers.py, update.py)."""
    root, out, patients, overwrite = plan.root, plan.out, plan.patients, plan.overwrite
    follow_links = plan.follow_links
    previous = previous_extraction(out, stage.provenance, root, overwrite)
    scans = {p.patient_id: scan_folder(p.folder, root, follow_links) for p in patients}
    plan = plan_update(patients, scans, previous)
    plan.check_other_root(out, root, overwrite)
    if plan.nothing_to_do:
        # Said like a finished run's last line, so every worker's log accounts for its share (here none: another
        # worker on the same output, or an earlier run, did it all).
        log.info("%s: already complete with these settings, images and CSV rows (%d patients); nothing to do: this "
                 "worker %s 0 images", out, len(patients), stage.verb.replace("ing", "ed"))
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
        n_images = embed_all(job, stage.decoder, stage.processor, stage.workers, stage.verb, progress)
        seconds = time.perf_counter() - started
        file_attrs = {"dataset_root": str(root.resolve()), "tool_version": __version__, **stage.file_attrs,
                      "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        totals = finish(job, out, plan.bag_source(parts), stage.dim, stage.provenance, file_attrs)
    rate = n_images / seconds if seconds > 0 else float("nan")
    log.info("wrote %s: %d patients, %d images, %d skipped; this worker %s %d images in %.1fs (%.1f img/s)",
             out, totals["n_patients"], totals["n_images"], totals["n_skipped"], stage.verb.replace("ing", "ed"),
             n_images, seconds, rate)
    return ExtractionSummary(out, **totals, seconds=seconds, images_per_second=rate)


def run_embedding(plan: ExtractionPlan, progress: Progress = Progress()) -> ExtractionSummary:
    """Embed what `plan` (plan.plan_embedding) holds: load the chosen weights, build the preprocessing of the
    planned crop and size, and run the stage."""
    task = plan.task
    if not isinstance(task, EmbeddingPlan):
        raise TypeError("run_embedding takes a plan of plan_embedding")
    settings = task.settings
    model, weights = load_chosen(settings.model, task.weights, task.weights_file)
    prep = preprocessing_for(model, task.crop, task.input_size, settings.stain)
    embedder = Embedder(model, task.device, settings.precision, settings.tta, settings.batch_size, settings.features)
    file_attrs = {"timm_version": timm.__version__, "torch_version": torch.__version__, "device": task.device.type}
    provenance = build_provenance(settings, weights, prep)
    stage = Stage(provenance, embedder.dim, NetworkInput(prep), embedder, task.workers, file_attrs)
    views, views_out = None, views_path(plan.out)
    if settings.views:  # a views file of other settings is refused now, not after the embeddings' pass
        views = Stage({**provenance, TRAINING_VIEW: augmentation.recipe(VIEW_SEED)}, embedder.dim,
                      ViewInput(prep, VIEW_SEED), embedder, task.workers, file_attrs)
        previous_extraction(views_out, views.provenance, plan.root, plan.overwrite)
    elif views_out.exists():
        log.warning("%s: left as it is (--no-views); it no longer matches %s if its images changed, and stage 2 then "
                    "refuses it: rerun without --no-views to update it, or remove it", views_out, plan.out)
    summary = run_stage(plan, stage, progress)
    if views is not None:
        log.info("training views (the cells as another acquisition might have made them, for the cell score to learn "
                 "to ignore): %s", views_out)
        run_stage(replace(plan, out=views_out), views, progress)
    return summary


def extract(root: Path, out: Path, settings: ExtractSettings, overwrite: bool = False,
            progress: Progress = Progress(), follow_links: bool = True) -> ExtractionSummary:
    """Embed every patient of the dataset at `root` into `out` (only those whose images changed, when `out`
    holds an earlier extraction with the same settings). Several processes may run this on the same `out`
    at once: they share the patients, and the last to finish writes the file (see workers.py)."""
    return run_embedding(plan_embedding(root, out, settings, overwrite, follow_links=follow_links), progress)
