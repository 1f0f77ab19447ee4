"""Stage 1: embed every cell image of every patient, resumably.

Patients are the unit of work: a DataLoader worker decodes one patient's images while the model embeds the
previous one, and a patient's embeddings are computed in fixed chunks of `batch_size`, so an interrupted
and resumed run produces exactly the embeddings of an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import timm
import torch
from tqdm import tqdm

from .. import __version__
from ..errors import InputError
from ..provenance import require_same
from .backbones import load_backbone
from .embedder import Embedder, resolve_device
from .images import read_cell_images
from .layout import PatientEntry, discover_patients, list_cell_images
from .parts import PartsFolder, exclusive_lock, parts_path
from .preprocessing import Preprocessing, build_transform, resolve_preprocessing
from .store import PatientBag, patient_ids, read_provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSettings:
    model: str
    weights: str | None
    crop: int
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


@dataclass
class DecodedPatient:
    """One patient's images as a batch tensor, in file-name order, and the files that could not be decoded."""

    index: int
    images: torch.Tensor  # (n, 3, H, W)
    names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}

    def pin_memory(self) -> DecodedPatient:
        return replace(self, images=self.images.pin_memory())


class PatientImages(torch.utils.data.Dataset):
    """Decodes one patient's images; unreadable files are reported, not raised."""

    def __init__(self, patients: list[PatientEntry], prep: Preprocessing):
        self.patients = patients
        self.prep = prep
        self.transform = None  # built lazily in each worker

    def __len__(self):
        return len(self.patients)

    def __getitem__(self, index) -> DecodedPatient:
        if self.transform is None:
            self.transform = build_transform(self.prep)
        read = read_cell_images(self.patients[index].folder, self.transform)
        size = self.prep.input_size
        batch = torch.stack(read.outputs) if read.outputs else torch.empty(0, 3, size, size)
        return DecodedPatient(index, batch, read.names, read.skipped)


def dataset_identity(root: Path, patients: list[PatientEntry]) -> dict:
    """What an extraction is of: its root and the list of patients (split/ID), hashed."""
    listing = "\n".join(f"{p.split}/{p.patient_id}" for p in patients)
    return {"root": str(Path(root).resolve()), "patients_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def build_provenance(settings: ExtractSettings, weights, prep: Preprocessing) -> dict:
    return {
        "model": settings.model,
        "weights_source": weights.source,
        "weights_sha256": weights.sha256,
        "features": settings.features,
        "preprocessing": prep.to_json(),
        "tta": "dihedral8" if settings.tta else "none",
        "precision": settings.precision,
        "dtype": settings.dtype,
    }


def existing_output(out: Path, provenance: dict, patients: list[PatientEntry], root: Path) -> ExtractionSummary:
    """`out` exists and is not to be overwritten: complete with these settings, or refused."""
    existing = read_provenance(out)
    require_same(existing, provenance, f"{out}: exists with other settings",
                 "pass --overwrite to replace it, or choose another --out")
    held = patient_ids(out)
    if held != {p.patient_id for p in patients}:
        raise InputError(f"{out}: holds {len(held)} patients, not the {len(patients)} that {root} lists; "
                         "pass --overwrite to re-extract, or choose another --out")
    log.info("%s: already complete with these settings (%d patients); nothing to do", out, len(patients))
    return ExtractionSummary(out, len(patients), int(existing.get("n_images", 0)), int(existing.get("n_skipped", 0)),
                             already_complete=True)


def default_workers(device: torch.device) -> int:
    """0 on CPU (decoding beside the model's threads was measured slower there), up to 8 on CUDA."""
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def patient_note(patient: PatientEntry, decoded: DecodedPatient) -> str:
    """Why a patient has 0 cells, logged, and each skipped image, logged."""
    note = ""
    if not patient.folder.is_dir():
        note = "folder missing"
    elif not decoded.names and not decoded.skipped:
        note = "no images"
    if note:
        log.warning("patient %s: %s (%s); recorded with 0 cells", patient.patient_id, note, patient.folder)
    for item in decoded.skipped:
        log.warning("patient %s: skipped unreadable image %s (%s)", patient.patient_id, patient.folder / item["file"],
                    item["reason"])
    return note


def embed_patients(todo: list[PatientEntry], prep: Preprocessing, embedder: Embedder, parts: PartsFolder,
                   workers: int) -> int:
    """Embed and write each patient of `todo` as a part; returns the number of images embedded."""
    loader = torch.utils.data.DataLoader(
        PatientImages(todo, prep), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=embedder.device.type == "cuda", prefetch_factor=2 if workers else None, persistent_workers=False,
    )
    total = sum(len(list_cell_images(p.folder)) for p in todo)
    with tqdm(total=total, unit="img", desc="embedding", dynamic_ncols=True, mininterval=1.0) as bar:
        for decoded in loader:
            patient = todo[decoded.index]
            note = patient_note(patient, decoded)
            embeddings = embedder(decoded.images, patient.patient_id)
            parts.write(PatientBag(patient.patient_id, patient.split, embeddings, decoded.names, decoded.skipped, note))
            bar.update(len(decoded.names) + len(decoded.skipped))
    return total


def extract(root: Path, out: Path, settings: ExtractSettings, overwrite: bool = False) -> ExtractionSummary:
    """Embed every patient of the dataset at `root` into `out`."""
    root, out = Path(root), Path(out)
    settings.validate()
    patients = discover_patients(root)
    device = resolve_device(settings.device)
    model, weights = load_backbone(settings.model, settings.weights)
    prep = resolve_preprocessing(model, settings.crop, settings.input_size, settings.stain)
    provenance = build_provenance(settings, weights, prep)
    with exclusive_lock(out):
        if out.exists() and not overwrite:
            return existing_output(out, provenance, patients, root)
        if overwrite:  # before PartsFolder(), which refuses an interrupted run of other settings
            shutil.rmtree(parts_path(out), ignore_errors=True)
        embedder = Embedder(model, device, settings.precision, settings.tta, settings.batch_size, settings.features)
        parts = PartsFolder(out, provenance, dim=embedder.dim, dataset=dataset_identity(root, patients))
        file_attrs = {"timm_version": timm.__version__, "torch_version": torch.__version__, "device": device.type}
        workers = settings.workers if settings.workers is not None else default_workers(device)
        return fill_parts(root, out, patients, parts, lambda todo: embed_patients(todo, prep, embedder, parts, workers),
                          file_attrs, "embedded")


def fill_parts(root: Path, out: Path, patients: list[PatientEntry], parts: PartsFolder,
               work: Callable[[list[PatientEntry]], int], file_attrs: dict, verb: str) -> ExtractionSummary:
    """Run `work` (which writes parts and returns its number of images) on the patients not yet in `parts`,
    then assemble the final file with `file_attrs`; shared by embedding and measuring."""
    todo = [p for p in patients if not parts.has(p.patient_id)]
    if len(todo) < len(patients):
        log.info("resuming: %d of %d patients already done in %s", len(patients) - len(todo), len(patients), parts.path)
    started = time.perf_counter()
    n_images = work(todo)
    seconds = time.perf_counter() - started
    file_attrs = {"dataset_root": str(root.resolve()), "tool_version": __version__, **file_attrs,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    totals = parts.assemble(out, [p.patient_id for p in patients], file_attrs)
    rate = n_images / seconds if seconds > 0 else float("nan")
    log.info("wrote %s: %d patients, %d images, %d skipped; %s %d images in %.1fs (%.1f img/s)",
             out, totals["n_patients"], totals["n_images"], totals["n_skipped"], verb, n_images, seconds, rate)
    return ExtractionSummary(out, **totals, seconds=seconds, images_per_second=rate)
