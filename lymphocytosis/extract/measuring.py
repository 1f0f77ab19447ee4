"""`extract.py --measure morphometry|colour`: a measurement set of every cell, in the embeddings file format.

The file is an embeddings file (store.py) whose "model" is the measurement set: one named vector per cell, rows
in the same image order, resumable through the same parts folder, assembled the same way. Its provenance says
what was measured and how (`features` = "<set>/<version>", `preprocessing` = the settings as JSON), and
`dimension_names` lists what each column is, so stage 2 can name every feature it builds from it.
Patients are measured in parallel processes (the segmentation is CPU work); results do not depend on how many.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .extraction import ExtractionSummary, dataset_identity, existing_output, fill_parts, patient_note
from .images import canonical_image, read_cell_images
from .layout import PatientEntry, discover_patients, list_cell_images
from .morphometry import MeasurementSettings, measure
from .parts import PartsFolder, exclusive_lock, parts_path
from .preprocessing import CHALLENGE_IMAGE_SIZE
from .store import PatientBag

log = logging.getLogger(__name__)


def measurement_provenance(settings: MeasurementSettings) -> dict:
    """Provenance in the embeddings file's keys: the measurement set is the "model", its code version and
    settings are its "weights" and "preprocessing"."""
    identity = json.dumps({"names": settings.names(), "settings": settings.to_json()}, sort_keys=True)
    return {
        "model": settings.kind,
        "weights_source": f"measurement:{settings.kind}/{settings.version}",
        "weights_sha256": hashlib.sha256(identity.encode()).hexdigest(),
        "features": f"{settings.kind}/{settings.version}",
        "preprocessing": settings.to_json(),
        "tta": "none",
        "precision": "fp64",
        "dtype": "float32",
    }


@dataclass(frozen=True)
class MeasureTask:
    """One patient's work, picklable for a worker process."""

    patient: PatientEntry
    settings: MeasurementSettings

    def __call__(self) -> PatientBag:
        read = read_cell_images(self.patient.folder, lambda image: measure(canonical_image(image, CHALLENGE_IMAGE_SIZE),
                                                                           self.settings))
        note = patient_note(self.patient, read)
        values = np.array(read.outputs, dtype=np.float64).reshape(len(read.names), len(self.settings.names()))
        return PatientBag(self.patient.patient_id, self.patient.split, values, read.names, read.skipped, note)


def run_task(task: MeasureTask) -> PatientBag:
    return task()


def measure_patients(todo: list[PatientEntry], settings: MeasurementSettings, parts: PartsFolder, workers: int) -> int:
    """Measure and write each patient of `todo` as a part, in order; returns the number of images."""
    total = sum(len(list_cell_images(p.folder)) for p in todo)
    tasks = [MeasureTask(p, settings) for p in todo]
    with tqdm(total=total, unit="img", desc=f"measuring {settings.kind}", dynamic_ncols=True, mininterval=1.0) as bar:
        if workers <= 1:
            bags = map(run_task, tasks)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            bags = pool.map(run_task, tasks)
        try:
            for bag in bags:
                parts.write(bag)
                bar.update(len(bag.filenames) + len(bag.skipped))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return total


def measure_dataset(root, out, settings: MeasurementSettings, overwrite: bool = False,
                    workers: int | None = None) -> ExtractionSummary:
    """Measure every patient of the dataset at `root` into `out` (resumable, like `extract`)."""
    root, out = Path(root), Path(out)
    settings.validate()
    patients = discover_patients(root)
    provenance = measurement_provenance(settings)
    workers = workers if workers is not None else max(1, os.cpu_count() or 1)
    with exclusive_lock(out):
        if out.exists() and not overwrite:
            return existing_output(out, provenance, patients, root)
        if overwrite:
            shutil.rmtree(parts_path(out), ignore_errors=True)
        parts = PartsFolder(out, provenance, dim=len(settings.names()), dataset=dataset_identity(root, patients))
        return fill_parts(root, out, patients, parts, lambda todo: measure_patients(todo, settings, parts, workers),
                          {"device": "cpu", "dimension_names": json.dumps(settings.names())}, "measured")
