"""`extract.py --measure morphometry|colour`: a measurement set of every cell, in the embeddings file format.

The file is an embeddings file (store.py) whose "model" is the measurement set: one named vector per cell
(NaN where the nucleus was not found), rows in the same image order, made by the same pipeline as embeddings
(resumable parts, reruns that redo only changed patients, several workers sharing one output). Its provenance
says what was measured and how (`features` = "<set>/<version>", `preprocessing` = the settings as JSON), and
`dimension_names` lists what each column is, so stage 2 can name every feature it builds from it. The
segmentation is CPU work: --workers decoding processes measure patients in parallel; results do not depend
on how many.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from ..contract.images import canonical_image
from ..progress import Progress
from .extraction import ExtractionSummary, Stage, run_stage
from .morphometry import MeasurementSettings, measure
from .plan import ExtractionPlan, MeasuringPlan, plan_measuring
from .preprocessing import CHALLENGE_IMAGE_SIZE


def measurement_provenance(settings: MeasurementSettings) -> dict:
    """Provenance in the embeddings file's keys: the measurement set is the "model", its code version and
    settings are its "weights" and "preprocessing"."""
    identity = json.dumps({"names": settings.names(), "settings": settings.to_json()}, sort_keys=True)
    return {
        "model": str(settings.kind),  # plain text: HDF5 attributes take no enum
        "weights_source": f"measurement:{settings.kind}/{settings.version}",
        "weights_sha256": hashlib.sha256(identity.encode()).hexdigest(),
        "features": f"{settings.kind}/{settings.version}",
        "preprocessing": settings.to_json(),
        "tta": "none",
        "precision": "fp64",
        "dtype": "float32",
    }


class Measurement:
    """Image -> its named vector of measured quantities (the decoder of a measuring run)."""

    def __init__(self, settings: MeasurementSettings):
        self.settings = settings
        self.width = len(settings.names())

    def __call__(self, image: Image.Image) -> np.ndarray:
        return measure(np.asarray(canonical_image(image, CHALLENGE_IMAGE_SIZE), dtype=np.float64), self.settings)

    def stack(self, outputs: list) -> np.ndarray:
        return np.array(outputs, dtype=np.float32).reshape(len(outputs), self.width)


class AsMeasured:
    """The measurements are the rows: nothing runs on them after decoding (the processor of a measuring run; a
    job.RowMaker). Patients are never packed together: there is no batch to fill."""

    pack_size = None

    def embed_group(self, batches: list, patient_ids: list[str]) -> list[np.ndarray]:
        return [np.asarray(batch, dtype=np.float32) for batch in batches]


def run_measuring(plan: ExtractionPlan, progress: Progress = Progress()) -> ExtractionSummary:
    """Measure what `plan` (plan.plan_measuring) holds."""
    task = plan.task
    if not isinstance(task, MeasuringPlan):
        raise TypeError("run_measuring takes a plan of plan_measuring")
    settings = task.settings
    file_attrs = {"device": "cpu", "dimension_names": json.dumps(settings.names())}
    stage = Stage(measurement_provenance(settings), len(settings.names()), Measurement(settings), AsMeasured(),
                  task.workers, file_attrs, verb=f"measuring {settings.kind}")
    return run_stage(plan, stage, progress)


def measure_dataset(root, out, settings: MeasurementSettings, overwrite: bool = False,
                    workers: int | None = None, progress: Progress = Progress(),
                    follow_links: bool = True) -> ExtractionSummary:
    """Measure every patient of the dataset at `root` into `out` (resumable, shareable, like `extract`)."""
    return run_measuring(plan_measuring(root, out, settings, overwrite, workers, follow_links=follow_links), progress)
