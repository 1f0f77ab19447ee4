"""Encoders known by name whose weights timm does not ship: their timm architecture, published file, digest,
how the file's tensors become timm's, and the preprocessing they were trained with.

DinoBloom (Koch et al., MICCAI 2024, Apache-2.0) is DINOv2 ViT-S/B/L/G/14 trained on >380k white-blood-cell
images from 13 datasets, including CellaVision / May-Grünwald-Giemsa smears like this challenge's. Its files
(Zenodo record 10908163) are DINOv2 training checkpoints, `{"teacher": state_dict}`, whose teacher holds
`backbone.`-prefixed ViT tensors in DINOv2's own naming plus the `dino_head.` / `ibot_head.` projection heads
used only in training. The backbone, trained at 224 px (16x16 patches of 14 px, no register tokens), maps onto
timm's `vit_*_patch14_dinov2` as timm's own DINOv2 conversion does (`_convert_dinov2`): drop `mask_token`
(masked-image training only), rename the giant's SwiGLU `mlp.w12` / `mlp.w3` to `mlp.fc1` / `mlp.fc2`.
The embedding is the CLS token after the final norm (timm's `global_pool="token"`), DinoBloom's own.

Nothing here touches the network: the user downloads the file once and passes `--weights FILE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # torch is imported where tensors are handled, so that `extract.py --help` can list the names
    import torch

DINOBLOOM_RECORD = "https://zenodo.org/records/10908163"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_MARKERS = ("dino_head", "ibot_head")  # DINO / iBOT projection heads: training only, not the encoder
BACKBONE_PREFIX = "backbone."


@dataclass(frozen=True)
class RegisteredBackbone:
    """A named encoder: which timm model it is, which published file holds its weights, how to feed it."""

    name: str  # the --model name
    architecture: str  # timm model name, built with img_size=input_size, num_classes=0, global_pool="token"
    feature_dim: int  # width of the CLS token, the embedding
    file_name: str  # as published
    file_sha256: str | None  # published SHA-256 of that file; None where it is not known here (never guessed)
    input_size: int = 224  # the size it was trained at; the only one accepted (its position embeddings' grid)
    patch_size: int = 14
    default_crop: int = 224  # the whole challenge image, as DinoBloom saw whole cell images in training
    min_crop: int = 130  # smaller crops magnify cells more than ~1.7x beyond anything seen in training
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str = DINOBLOOM_RECORD
    license: str = "apache-2.0"

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size

    @property
    def n_tokens(self) -> int:
        """Position embeddings in the file: one CLS token plus one per patch, no register tokens."""
        return 1 + self.grid * self.grid

    def pretrained_cfg(self, base: dict) -> dict:
        """timm's description of the weights (its data config reads it), saying they are this file's."""
        drop = ("url", "hf_hub_id", "hf_hub_filename", "file")
        return {**{k: v for k, v in base.items() if k not in drop}, "tag": self.name, "registered_backbone": self.name,
                "input_size": (3, self.input_size, self.input_size), "interpolation": self.interpolation,
                "crop_pct": 1.0, "mean": self.mean, "std": self.std, "num_classes": 0, "source": self.source,
                "license": self.license}


DINOBLOOM = (
    # Only DinoBloom-S's digest is known here; B/L/G's are recorded in the provenance but not checked.
    RegisteredBackbone("dinobloom-s", "vit_small_patch14_dinov2", 384, "DinoBloom-S.pth",
                       "c2f7990b003e89bcece80e379fb8fe0ba2ec392ce19b286e8a294abd99568e44"),
    RegisteredBackbone("dinobloom-b", "vit_base_patch14_dinov2", 768, "DinoBloom-B.pth", None),
    RegisteredBackbone("dinobloom-l", "vit_large_patch14_dinov2", 1024, "DinoBloom-L.pth", None),
    RegisteredBackbone("dinobloom-g", "vit_giant_patch14_dinov2", 1536, "DinoBloom-G.pth", None),
)
REGISTRY: dict[str, RegisteredBackbone] = {entry.name: entry for entry in DINOBLOOM}


def registered(name: str) -> RegisteredBackbone | None:
    """The registry entry of a --model name, or None for a plain timm model name."""
    return REGISTRY.get(name)


def registered_of(model: torch.nn.Module) -> RegisteredBackbone | None:
    """The entry a model was built from (recorded in its timm `pretrained_cfg` by `build_registered`)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    return REGISTRY.get(config.get("registered_backbone", ""))


def build_registered(entry: RegisteredBackbone) -> torch.nn.Module:
    """The entry's timm model, randomly initialised: pooled output = CLS token after the final norm."""
    import timm

    model = timm.create_model(entry.architecture, pretrained=False, img_size=entry.input_size, num_classes=0,
                              global_pool="token")
    model.pretrained_cfg = entry.pretrained_cfg(dict(model.pretrained_cfg))
    return model


def _teacher_backbone(checkpoint, entry: RegisteredBackbone, source: str) -> dict[str, torch.Tensor]:
    """The teacher's encoder tensors, `backbone.` prefix stripped, heads dropped."""
    import torch

    teacher = checkpoint.get("teacher") if isinstance(checkpoint, dict) else None
    if not isinstance(teacher, dict):
        keys = ", ".join(sorted(map(str, checkpoint))[:4]) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise InputError(f"{source}: no 'teacher' state dict (found: {keys}); not a DinoBloom checkpoint "
                         f"({entry.file_name} from {entry.source})")
    backbone = {}
    for key, value in teacher.items():
        if any(marker in key for marker in HEAD_MARKERS):
            continue
        if not key.startswith(BACKBONE_PREFIX) or not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: teacher entry {key!r} is neither a backbone tensor nor a head; "
                             "not a DinoBloom checkpoint")
        backbone[key[len(BACKBONE_PREFIX):]] = value
    if not backbone:
        raise InputError(f"{source}: the teacher holds no backbone. tensors; not a DinoBloom checkpoint")
    return backbone


def _check_shape(backbone: dict[str, torch.Tensor], entry: RegisteredBackbone, source: str) -> None:
    """The checks that name what is wrong where a name-by-name mismatch would only say 'differ'."""
    import torch

    if "register_tokens" in backbone:
        n = backbone["register_tokens"].shape[1] if backbone["register_tokens"].dim() == 3 else "?"
        raise InputError(f"{source}: has {n} register tokens; {entry.name} has none (a DINOv2-with-registers checkpoint?)")
    width = backbone["cls_token"].shape[-1] if isinstance(backbone.get("cls_token"), torch.Tensor) else None
    if width is None:
        raise InputError(f"{source}: no backbone.cls_token in the teacher; not a DinoBloom checkpoint")
    if width != entry.feature_dim:
        other = next((e.name for e in DINOBLOOM if e.feature_dim == width), None)
        hint = f"; this looks like {other}: pass --model {other}" if other else ""
        raise InputError(f"{source}: embedding width {width}, but {entry.name} ({entry.architecture}) has "
                         f"{entry.feature_dim}{hint}")
    pos_embed = backbone.get("pos_embed")
    if pos_embed is None or pos_embed.dim() != 3 or pos_embed.shape[1] != entry.n_tokens:
        found = "none" if pos_embed is None else f"shape {tuple(pos_embed.shape)}"
        raise InputError(f"{source}: pos_embed {found}; {entry.name} has 1 + {entry.grid}x{entry.grid} = "
                         f"{entry.n_tokens} tokens ({entry.input_size} px, patch {entry.patch_size})")


def timm_state_dict(checkpoint, entry: RegisteredBackbone, source: str) -> dict[str, torch.Tensor]:
    """A DinoBloom file's content as timm's tensor names for `entry.architecture` (shapes checked by the loader)."""
    backbone = _teacher_backbone(checkpoint, entry, source)
    _check_shape(backbone, entry, source)
    backbone.pop("mask_token", None)
    return {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", key)): value
            for key, value in backbone.items()}


def registered_crop_and_size(entry: RegisteredBackbone, crop: int | None, input_size: int | None) -> tuple[int, int]:
    """The entry's defaults, and its limits refused in one line."""
    crop = entry.default_crop if crop is None else crop
    size = entry.input_size if input_size is None else input_size
    if size != entry.input_size:
        raise InputError(f"--input-size {size}: {entry.name} takes {entry.input_size} px only (patch {entry.patch_size}, "
                         f"{entry.grid}x{entry.grid} tokens, as it was trained)")
    if crop < entry.min_crop:
        raise InputError(f"--crop {crop}: {entry.name} needs a centre crop of at least {entry.min_crop} px, resized to "
                         f"{entry.input_size} (smaller crops magnify cells beyond what it was trained on)")
    return crop, size
