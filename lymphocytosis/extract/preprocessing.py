"""How an image file becomes the model's input: size, crop, normalisation; recorded in the embeddings file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import timm.data
import torch
from PIL import Image
from torchvision import transforms

from ..contract.images import canonical_image
from ..defaults import DEFAULT_CROP, Stain
from ..errors import InputError
from .registry import RegisteredBackbone, registered_crop_and_size, registered_of
from .stain import check_method, normalise

CHALLENGE_IMAGE_SIZE = 224  # every challenge image is 224x224; other sizes are resized to it first


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns an image file into the model's input; recorded in the embeddings file."""

    image_size: int  # images of another size are first resized to this (the challenge's 224)
    crop: int  # centre crop, in pixels of the image_size image (cells are centred)
    input_size: int  # the crop is resized to this before the model
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stain: str = "none"  # stain control applied to the image_size image (see stain.py)

    def to_json(self) -> str:
        fields = asdict(self)
        if fields["stain"] == "none":
            del fields["stain"]  # files extracted before stain controls existed stay comparable
        return json.dumps(fields, sort_keys=True)


def crop_and_size(entry: RegisteredBackbone | None, crop: int | None, input_size: int | None) -> tuple[int, int]:
    """The crop and input size asked for, or the model's defaults: a registered encoder's own (`registry.py`;
    its limits refused in one line), else DEFAULT_CROP and the crop's size. Needs no model: a plan checks it
    before loading one."""
    if entry is not None:
        crop, size = registered_crop_and_size(entry, crop, input_size)
    else:
        crop = DEFAULT_CROP if crop is None else crop
        size = input_size or crop
    if not 16 <= crop <= CHALLENGE_IMAGE_SIZE:
        raise InputError(f"--crop {crop}: must be between 16 and {CHALLENGE_IMAGE_SIZE} pixels")
    return crop, size


def resolve_preprocessing(model: torch.nn.Module, crop: int | None, input_size: int | None,
                          stain: str = "none") -> Preprocessing:
    """The crop and size asked for (or the model's defaults) with the model's normalisation and interpolation."""
    crop, size = crop_and_size(registered_of(model), crop, input_size)
    return preprocessing_for(model, crop, size, check_method(stain))


def preprocessing_for(model: torch.nn.Module, crop: int, size: int, stain: Stain) -> Preprocessing:
    """The preprocessing of a planned crop, size and stain control (checked already, see plan.py): the model's
    normalisation and interpolation, a registered encoder's own, else timm's data config."""
    entry = registered_of(model)
    if entry is not None:
        interpolation, mean, std = entry.interpolation, entry.mean, entry.std
    else:
        config = timm.data.resolve_model_data_config(model)
        interpolation, mean, std = str(config.get("interpolation", "bicubic")), config["mean"], config["std"]
    return Preprocessing(
        image_size=CHALLENGE_IMAGE_SIZE,
        crop=crop,
        input_size=size,
        interpolation=interpolation,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        stain=str(stain),  # recorded as plain text (HDF5 attributes take no enum)
    )


class NormalisedTensor:
    """PIL RGB image -> (3, H, W) float32 tensor, (pixel / 255 - mean) / std: torchvision's ToTensor + Normalize,
    the same float32 operations in the same order (bit-identical, tested), computed in numpy. Torch's small
    per-image ops hand work to its thread pool: on 2 busy cores they took 2.7 ms an image against 0.5 ms here,
    which at 112 px is a third of the extraction's time."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
        normalised = (pixels - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def build_transform(prep: Preprocessing):
    """PIL image -> normalised tensor: the challenge's 224 px image, the centre crop, timm's own resize (from
    `create_transform`, only when the crop is not already the input size), then the normalisation."""
    timm_tail = timm.data.create_transform(
        input_size=(3, prep.input_size, prep.input_size),
        interpolation=prep.interpolation,
        mean=prep.mean,
        std=prep.std,
        crop_pct=1.0,
        crop_mode="center",
    )

    def to_canonical(image: Image.Image) -> Image.Image:
        return normalise(canonical_image(image, prep.image_size), prep.stain)

    resize = [t for t in timm_tail.transforms if isinstance(t, (transforms.Resize, transforms.CenterCrop))]
    if prep.input_size == prep.crop:  # resizing 112 px to 112 px is the identity, at half the per-image CPU time
        resize = []
    return transforms.Compose([transforms.Lambda(to_canonical), transforms.CenterCrop(prep.crop), *resize,
                               NormalisedTensor(prep.mean, prep.std)])
