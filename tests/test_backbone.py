"""The frozen encoder: the embedded EfficientNet-Lite0 checkpoint, checkpoint safety, preprocessing."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
from PIL import Image

from lymphocytosis.errors import InputError
from lymphocytosis.extract.backbones import (
    DEFAULT_MODEL,
    embedded_weights_file,
    load_backbone,
    map_checkpoint_keys,
    state_dict_sha256,
)
from lymphocytosis.extract.preprocessing import build_transform, resolve_preprocessing

# ImageNet-1k classes 281..285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
DOMESTIC_CATS = range(281, 286)


@pytest.fixture(scope="module")
def classifier():
    model, info = load_backbone(DEFAULT_MODEL, None, keep_classifier=True)
    return model, info


@pytest.fixture(scope="module")
def embedded_checkpoint() -> OrderedDict[str, torch.Tensor]:
    return torch.load(embedded_weights_file(), map_location="cpu", weights_only=True)


def test_embedded_checkpoint_maps_strictly_and_classifies_a_cat(classifier):
    """Renaming by position is only right if the tensors land in the right layers: a cat must be a cat."""
    skimage_data = pytest.importorskip("skimage.data")
    model, info = classifier
    assert info.source.startswith("embedded:")
    config = timm.data.resolve_model_data_config(model)
    assert tuple(config["mean"]) == (0.5, 0.5, 0.5) and tuple(config["std"]) == (0.5, 0.5, 0.5)
    size = config["input_size"][-1]
    assert size == 224
    image = Image.fromarray(skimage_data.chelsea()).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(config["mean"]).view(3, 1, 1)) / torch.tensor(config["std"]).view(3, 1, 1)
    with torch.inference_mode():
        probabilities = model(x.unsqueeze(0)).softmax(-1)[0]
    top1 = int(probabilities.argmax())
    assert top1 in DOMESTIC_CATS, f"top-1 class {top1} ({float(probabilities[top1]):.2f}) is not a domestic cat"
    assert float(probabilities[list(DOMESTIC_CATS)].sum()) > 0.5


def test_embedded_checkpoint_every_tensor_is_used(classifier, embedded_checkpoint):
    """Strict load: every model tensor equals the checkpoint tensor at the same position."""
    model, _ = classifier
    target = model.state_dict()
    assert len(target) == len(embedded_checkpoint)
    for (src_key, src), (dst_key, dst) in zip(embedded_checkpoint.items(), target.items()):
        assert torch.equal(src, dst), f"{src_key} -> {dst_key}"


def test_feature_model_and_sha(classifier):
    features, info = load_backbone(DEFAULT_MODEL, "embedded")
    assert features.num_features == 1280
    assert not features.training and not any(p.requires_grad for p in features.parameters())
    with torch.inference_mode():
        out = features(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1280) and torch.isfinite(out).all()
    # Same weights whether or not the classifier is kept, for the tensors they share; the sha is of the
    # parameters as loaded, so it is reproducible and changes with any parameter.
    assert info.sha256 == state_dict_sha256(features.state_dict())
    _, again = load_backbone(DEFAULT_MODEL, None)
    assert again == info
    changed = features.state_dict()
    changed["conv_stem.weight"] = changed["conv_stem.weight"].clone()
    changed["conv_stem.weight"].view(-1)[0] += 1e-3
    assert state_dict_sha256(changed) != info.sha256


def test_timm_keyed_checkpoint_file_loads_and_matches_embedded(tmp_path, classifier):
    model, info = classifier
    path = tmp_path / "lite0_timm_keys.pth"
    torch.save(model.state_dict(), path)
    loaded, file_info = load_backbone(DEFAULT_MODEL, str(path), keep_classifier=True)
    assert file_info.source == "file:lite0_timm_keys.pth"
    assert file_info.sha256 == info.sha256
    # wrapped the usual ways
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    assert load_backbone(DEFAULT_MODEL, str(tmp_path / "wrapped.pth"), keep_classifier=True)[1].sha256 == info.sha256


def test_safetensors_checkpoint(tmp_path, classifier):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model, info = classifier
    path = tmp_path / "lite0.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert load_backbone(DEFAULT_MODEL, str(path), keep_classifier=True)[1].sha256 == info.sha256


def assert_weights_file_refused(tmp_path, state: dict, match: str) -> None:
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=match):
        load_backbone(DEFAULT_MODEL, str(path))


def test_checkpoint_with_a_wrong_shape_is_refused(tmp_path, embedded_checkpoint):
    bad = OrderedDict(embedded_checkpoint)
    bad["_fc.weight"] = torch.zeros(10, 1280)
    bad["_fc.bias"] = torch.zeros(10)
    # a file in the package's own key layout is renamed by position only as the embedded default: as a
    # --weights FILE it is refused by name, before any shape could be mistaken
    assert_weights_file_refused(tmp_path, bad, "tensor names differ")


def test_timm_keyed_checkpoint_with_a_wrong_shape_is_refused(tmp_path, classifier):
    """Same key names, other shapes (e.g. a model fine-tuned to 10 classes): an InputError, not a traceback."""
    model, _ = classifier
    bad = model.state_dict()
    bad["classifier.weight"] = torch.zeros(10, 1280)
    bad["classifier.bias"] = torch.zeros(10)
    assert_weights_file_refused(tmp_path, bad, "classifier.weight")


def test_checkpoint_with_a_wrong_tensor_count_is_refused(tmp_path, embedded_checkpoint):
    bad = OrderedDict(embedded_checkpoint)
    bad.popitem()  # drop _fc.bias
    assert_weights_file_refused(tmp_path, bad, "tensor names differ")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    other = timm.create_model("resnet18", pretrained=False).state_dict()
    assert_weights_file_refused(tmp_path, other, "tensor names differ")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_pickle_of_arbitrary_objects_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(InputError, match="not a loadable weights file"):
        load_backbone(DEFAULT_MODEL, str(path))
    assert not marker.exists(), "unpickling ran code: the checkpoint was not read with weights_only=True"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00garbage, not a checkpoint", "not a loadable weights file"),
        (None, "does not hold a state dict of tensors"),  # torch.save of a dict with non-tensors
    ],
)
def test_other_bad_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"conv_stem.weight": torch.zeros(1), "note": "hello"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_backbone(DEFAULT_MODEL, str(path))


def test_missing_weights_file(tmp_path):
    with pytest.raises(InputError, match="weights file not found"):
        load_backbone(DEFAULT_MODEL, str(tmp_path / "nope.pth"))


def test_embedded_weights_only_for_lite0():
    with pytest.raises(InputError, match="embedded weights are EfficientNet-Lite0"):
        load_backbone("resnet18", "embedded")


def test_unknown_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown timm model"):
        load_backbone("no_such_model_xyz", None)
    with pytest.raises(InputError, match="unknown timm model"):
        load_backbone("no_such_model_xyz", str(embedded_weights_file()))


def test_map_checkpoint_keys_by_position_and_identity():
    target = OrderedDict(a=torch.zeros(2), b=torch.zeros(3, 1))
    renamed = OrderedDict(x=torch.ones(2), y=torch.ones(3, 1))
    with pytest.raises(InputError, match="names differ"):  # positional renaming only where allowed (embedded)
        map_checkpoint_keys(renamed, target, "src")
    by_position = map_checkpoint_keys(renamed, target, "src", by_position=True)
    assert list(by_position) == ["a", "b"] and torch.equal(by_position["a"], torch.ones(2))
    with pytest.raises(InputError, match="1 tensors, the model has 2"):
        map_checkpoint_keys(OrderedDict(x=torch.ones(2)), target, "src", by_position=True)
    same_keys = map_checkpoint_keys(OrderedDict(b=torch.ones(3, 1), a=torch.ones(2)), target, "src")
    assert set(same_keys) == {"a", "b"}
    with pytest.raises(InputError, match="does not match"):
        map_checkpoint_keys(OrderedDict(x=torch.ones(3, 1), y=torch.ones(2)), target, "src", by_position=True)
    with pytest.raises(InputError):
        map_checkpoint_keys(OrderedDict(a=torch.ones(4), b=torch.ones(3, 1)), target, "src")


def test_preprocessing_record_and_transform(classifier):
    model, _ = classifier
    prep = resolve_preprocessing(model, crop=112, input_size=None)
    assert (prep.image_size, prep.crop, prep.input_size) == (224, 112, 112)
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    assert prep.interpolation == "bicubic"
    assert resolve_preprocessing(model, crop=112, input_size=160).input_size == 160
    for bad_crop in (8, 15, 225, 400):
        with pytest.raises(InputError, match="--crop"):
            resolve_preprocessing(model, crop=bad_crop, input_size=None)

    transform = build_transform(resolve_preprocessing(model, crop=64, input_size=None))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    x = transform(Image.fromarray(pixels))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    # the centre 64x64 of the 224 image, scaled to [-1, 1] with mean = std = 0.5
    expected = torch.from_numpy(pixels[80:144, 80:144].astype(np.float32) / 255.0).permute(2, 0, 1) * 2 - 1
    assert torch.allclose(x, expected, atol=1e-5)


@pytest.mark.parametrize("crop, input_size", [(64, None), (112, None), (64, 96), (224, 224)])
def test_transform_equals_timm_s_own(classifier, crop, input_size):
    """The numpy normalisation is a speed-up only: bit-identical to timm's create_transform tail."""
    import torchvision.transforms as T

    model, _ = classifier
    prep = resolve_preprocessing(model, crop=crop, input_size=input_size)
    timm_tail = timm.data.create_transform(input_size=(3, prep.input_size, prep.input_size),
                                           interpolation=prep.interpolation, mean=prep.mean, std=prep.std,
                                           crop_pct=1.0, crop_mode="center")
    reference = T.Compose([T.CenterCrop(crop), timm_tail])
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    assert torch.equal(build_transform(prep)(image), reference(image))


@pytest.mark.parametrize("mode, size", [("L", 224), ("RGBA", 224), ("P", 224), ("CMYK", 224), ("RGB", 300), ("RGB", 100)])
def test_transform_accepts_any_mode_and_size(classifier, mode, size):
    model, _ = classifier
    transform = build_transform(resolve_preprocessing(model, crop=64, input_size=96))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)
    x = transform(image)
    assert x.shape == (3, 96, 96) and torch.isfinite(x).all()
    assert float(x.min()) >= -1.0 - 1e-4 and float(x.max()) <= 1.0 + 1e-4


def test_fold_batchnorm_keeps_the_function():
    """Folding BN into the convolutions is a speed-up only: same outputs, no BatchNorm left after a conv."""
    import copy

    from lymphocytosis.extract.embedder import fold_batchnorm

    model, _ = load_backbone("tf_efficientnet_lite0", None)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == 49
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-4)
    assert not torch.equal(expected, torch.zeros_like(expected))
