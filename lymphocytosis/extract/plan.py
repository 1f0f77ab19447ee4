"""Stage 1 planned once: the options turned into a typed, checked plan before anything is written.

A plan lists the dataset's patients (its CSVs read once), checks the output, and resolves what the run needs:
for embedding the device, the weights (file, hub or embedded) and the crop and input size; for measuring the
settings. The command refuses from the plan (one `error:` line, no log left behind) and the run consumes it
(`extraction.run_embedding`, `measuring.run_measuring`), so no check runs twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..contract.clinical import check_clinical_csvs
from ..contract.layout import PatientEntry, discover_patients
from ..contract.store import views_path
from ..defaults import FeatureKind, Precision, Stain, StorageDtype
from ..errors import InputError
from .backbones import weights_choice
from .embedder import resolve_device
from .preprocessing import crop_and_size
from .registry import registered
from .stain import check_method
from .update import check_output

if TYPE_CHECKING:  # an embedding run does not load the measuring code (scikit-image, SciPy)
    from .morphometry import MeasurementSettings


@dataclass(frozen=True)
class ExtractSettings:
    model: str
    weights: str | None
    crop: int | None  # None: the model's default (112 px; 224 for registered encoders such as dinobloom-s)
    input_size: int | None
    tta: bool
    precision: Precision  # fp32, or bf16 autocast
    dtype: StorageDtype  # storage: float32 or float16
    batch_size: int
    workers: int | None  # None: 0 on CPU, min(8, cores - 1) on CUDA
    device: str  # "auto", "cpu", "cuda" or "cuda:K"
    features: FeatureKind = FeatureKind.POOLED  # the pooled features, or also the pooled intermediate stages
    stain: Stain = Stain.NONE  # stain control before the crop (stain.py)
    views: bool = True  # also embed one training view of every cell (augmentation.py) into store.views_path(out)

    def validate(self) -> None:
        """Settings built in code (not by the command line, whose choices argparse checks) may hold anything."""
        if self.precision not in set(Precision):
            raise InputError(f"--precision {self.precision}: expected fp32 or bf16")
        if self.dtype not in set(StorageDtype):
            raise InputError(f"--dtype {self.dtype}: expected float32 or float16")
        if self.features not in set(FeatureKind):
            raise InputError(f"--features {self.features}: expected one of {', '.join(FeatureKind)}")
        check_method(self.stain)
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")


@dataclass(frozen=True)
class EmbeddingPlan:
    """What an embedding run resolved: where it runs, which weights, which crop and size, how many decoders."""

    settings: ExtractSettings
    device: torch.device
    weights: str  # "embedded", "hub" or the file given
    weights_file: Path | None  # None: timm's hub weights
    crop: int
    input_size: int
    workers: int


@dataclass(frozen=True)
class MeasuringPlan:
    settings: MeasurementSettings
    workers: int


@dataclass(frozen=True)
class ExtractionPlan:
    """A checked stage-1 run: the dataset's patients, in CSV order, into `out` (embedded or measured)."""

    root: Path
    out: Path
    patients: list[PatientEntry]
    overwrite: bool
    task: EmbeddingPlan | MeasuringPlan
    follow_links: bool = True  # False (--refuse-links): linked patient folders and images are skipped, with the reason


def checked_patients(root: Path, out: Path, tables: dict | None = None) -> list[PatientEntry]:
    """Every patient the CSVs list (read once: here, or by the caller's check_clinical_csvs, whose `tables` it
    passes), every row checked with stage 2's rules (all bad values at once), and `out` checked against them."""
    patients = discover_patients(root, check_clinical_csvs(root) if tables is None else tables)
    if not patients:
        raise InputError(f"{root}: the CSVs list no patient; nothing to extract")
    check_output(out, patients)
    return patients


def default_workers(device: torch.device) -> int:
    """0 on CPU (decoding beside the model's threads was measured slower there), up to 8 on CUDA."""
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def plan_embedding(root: Path, out: Path, settings: ExtractSettings, overwrite: bool = False, *,
                   tables: dict | None = None, follow_links: bool = True) -> ExtractionPlan:
    """The checks of an embedding run, in the order a user fixes them: dataset (its CSVs' checked `tables`, when
    the caller read them) and output, settings, device, weights, crop and size. Nothing is loaded or written."""
    root, out = Path(root), Path(out)
    patients = checked_patients(root, out, tables)
    settings.validate()
    if settings.views:
        check_output(views_path(out), patients)
    device = resolve_device(settings.device)
    weights, weights_file = weights_choice(settings.model, settings.weights)
    crop, size = crop_and_size(registered(settings.model), settings.crop, settings.input_size)
    workers = settings.workers if settings.workers is not None else default_workers(device)
    task = EmbeddingPlan(settings, device, weights, weights_file, crop, size, workers)
    return ExtractionPlan(root, out, patients, overwrite, task, follow_links)


def plan_measuring(root: Path, out: Path, settings: MeasurementSettings, overwrite: bool = False,
                   workers: int | None = None, *, tables: dict | None = None,
                   follow_links: bool = True) -> ExtractionPlan:
    """The checks of a measuring run (`extract.py --measure`): dataset and output, then the settings."""
    root, out = Path(root), Path(out)
    patients = checked_patients(root, out, tables)
    settings.validate()
    workers = workers if workers is not None else max(0, (os.cpu_count() or 1) - 1)
    return ExtractionPlan(root, out, patients, overwrite, MeasuringPlan(settings, workers), follow_links)
