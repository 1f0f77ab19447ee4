"""Registered encoders (DinoBloom): the published checkpoint layout loads strictly and embeds like the model it
was made from; wrong files, sizes, digests and preprocessing are refused in one line; extract.py records it all.

The checkpoints here are random weights written in the official layout: DINOv2's training checkpoint
`{"teacher": {"backbone.<DINOv2 name>": ..., "dino_head.*": ..., "ibot_head.*": ...}}` (plus a `student`
dict, which the loader ignores). The names come from DINOv2's own code; `tools/dinov2_layout_check.py`
checks them and the loader against that code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import extract as extract_cli
from conftest import assert_one_line_error, run_main, write_dataset
from lymphocytosis.contract.store import load_bags, read_provenance
from lymphocytosis.errors import InputError
from lymphocytosis.extract import registry
from lymphocytosis.extract.backbones import DEFAULT_MODEL, load_backbone, map_checkpoint_keys, state_dict_sha256
from lymphocytosis.extract.preprocessing import build_transform, resolve_preprocessing

S = registry.REGISTRY["dinobloom-s"]
CLI_ARGS = ["--batch-size", "4", "--workers", "0", "--device", "cpu"]


def official_backbone_shapes(dim: int, depth: int, swiglu: bool = False, grid: int = 16) -> dict[str, tuple]:
    """DINOv2's own backbone tensor names and shapes (dinov2/models/vision_transformer.py and layers/: Block with
    norm1, attn.qkv, attn.proj, ls1, norm2, mlp, ls2; Mlp fc1/fc2 or SwiGLUFFNFused w12/w3; mask_token)."""
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim), "mask_token": (1, dim),
              "patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,)}
    hidden = (int(4 * dim * 2 / 3) + 7) // 8 * 8 if swiglu else 4 * dim
    ffn = {"w12.weight": (2 * hidden, dim), "w12.bias": (2 * hidden,), "w3.weight": (dim, hidden), "w3.bias": (dim,)} \
        if swiglu else {"fc1.weight": (hidden, dim), "fc1.bias": (hidden,), "fc2.weight": (dim, hidden), "fc2.bias": (dim,)}
    for i in range(depth):
        block = {"norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
                 "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "ls1.gamma": (dim,), "norm2.weight": (dim,),
                 "norm2.bias": (dim,), **{f"mlp.{k}": v for k, v in ffn.items()}, "ls2.gamma": (dim,)}
        shapes.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    return {**shapes, "norm.weight": (dim,), "norm.bias": (dim,)}


def head_tensors(name: str, dim: int) -> dict[str, torch.Tensor]:
    """A small DINOHead (mlp of 3 linear layers, weight-normed last layer), as the teacher holds it."""
    shapes = {"mlp.0.weight": (32, dim), "mlp.0.bias": (32,), "mlp.2.weight": (32, 32), "mlp.2.bias": (32,),
              "mlp.4.weight": (16, 32), "mlp.4.bias": (16,), "last_layer.weight_g": (64, 1), "last_layer.weight_v": (64, 16)}
    return {f"{name}.{k}": torch.randn(shape) for k, shape in shapes.items()}


def write_official(path: Path, backbone: dict[str, torch.Tensor], dim: int) -> Path:
    teacher = {f"backbone.{k}": v for k, v in backbone.items()}
    teacher.update(head_tensors("dino_head", dim))
    teacher.update(head_tensors("ibot_head", dim))
    torch.save({"teacher": teacher, "student": dict(teacher)}, path)
    return path


def random_backbone(dim: int, depth: int, **changes) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout (cheap: for the refusals, which never get to a forward pass)."""
    backbone = {k: torch.randn(shape) * 0.02 for k, shape in official_backbone_shapes(dim, depth).items()}
    return {**backbone, **changes}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    """A timm ViT-S/14 at 224 px with every tensor random (layer scales near 1, so every block counts)."""
    model = timm.create_model(S.architecture, pretrained=False, img_size=224, num_classes=0).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05 + (1.0 if tensor.dim() == 1 else 0.0))
    return model


@pytest.fixture(scope="module")
def official_checkpoint(source_model, tmp_path_factory) -> Path:
    """`source_model` saved as DinoBloom-S.pth is laid out: DINOv2 names (+ mask_token), `backbone.` prefix, heads."""
    backbone = {"mask_token": torch.zeros(1, S.feature_dim), **source_model.state_dict()}
    shapes = {k: tuple(v.shape) for k, v in backbone.items()}
    assert shapes == official_backbone_shapes(S.feature_dim, 12)  # the file is in DINOv2's naming, not only timm's
    return write_official(tmp_path_factory.mktemp("dinobloom") / S.file_name, backbone, S.feature_dim)


@pytest.fixture
def published(monkeypatch):
    """`published(digest)`: pretend dinobloom-s's published SHA-256 is `digest` (None: not known)."""
    def set_digest(digest: str | None) -> None:
        monkeypatch.setitem(registry.REGISTRY, S.name, replace(S, file_sha256=digest))
    return set_digest


def cell_images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(n)]


# ------------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name, width, depth, swiglu", [("dinobloom-s", 384, 12, False), ("dinobloom-b", 768, 12, False),
                                                         ("dinobloom-l", 1024, 24, False), ("dinobloom-g", 1536, 40, True)])
def test_registry_entry_maps_the_official_layout_onto_its_timm_model(name, width, depth, swiglu):
    """Every size, without memory (meta tensors): names and shapes of the official backbone map strictly."""
    entry = registry.REGISTRY[name]
    assert entry.feature_dim == width and entry.file_name == f"DinoBloom-{name[-1].upper()}.pth"
    with torch.device("meta"):
        model = registry.build_registered(entry)
        official = {f"backbone.{k}": torch.empty(shape) for k, shape in official_backbone_shapes(width, depth, swiglu).items()}
    official.update({k: v.to("meta") for k, v in head_tensors("dino_head", width).items()})
    assert model.num_features == width and model.global_pool == "token" and model.num_classes == 0
    assert tuple(model.pos_embed.shape) == (1, 257, width) and model.num_prefix_tokens == 1  # CLS only, no registers
    mapped = map_checkpoint_keys(registry.timm_state_dict({"teacher": official}, entry, name), model.state_dict(), name)
    assert set(mapped) == set(model.state_dict())
    assert registry.registered_of(model) == entry and model.pretrained_cfg["input_size"] == (3, 224, 224)


def test_published_digests_are_only_those_known():
    assert S.file_sha256 == "c2f7990b003e89bcece80e379fb8fe0ba2ec392ce19b286e8a294abd99568e44"
    assert [registry.REGISTRY[n].file_sha256 for n in ("dinobloom-b", "dinobloom-l", "dinobloom-g")] == [None] * 3
    assert registry.registered(DEFAULT_MODEL) is None


# --------------------------------------------------------------------------------------------- loading


def test_official_checkpoint_loads_strictly_and_embeds_like_its_source(official_checkpoint, source_model, published):
    digest = file_digest(official_checkpoint)
    published(digest)
    model, weights = load_backbone("dinobloom-s", str(official_checkpoint))
    assert weights.source == "file:DinoBloom-S.pth" and weights.file_sha256 == digest
    assert weights.sha256 == state_dict_sha256(source_model.state_dict())  # every tensor landed, none left out
    prep = resolve_preprocessing(model, None, None)
    assert (prep.crop, prep.input_size, prep.interpolation) == (224, 224, "bicubic")
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    x = torch.stack([build_transform(prep)(image) for image in cell_images(3)])
    with torch.inference_mode():
        got, expected = model(x), source_model(x)
        cls_after_norm = source_model.forward_features(x)[:, 0]  # what DinoBloom's x_norm_clstoken is
    assert got.shape == (3, 384)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got, cls_after_norm, atol=1e-5, rtol=1e-5)
    assert float(got.std()) > 0.1


def test_unknown_published_digest_is_recorded_with_a_warning(official_checkpoint, published, caplog):
    published(None)
    with caplog.at_level(logging.WARNING):
        _, weights = load_backbone("dinobloom-s", str(official_checkpoint))
    assert weights.file_sha256 == file_digest(official_checkpoint)
    assert "no published SHA-256" in caplog.text


def test_wrong_digest_is_refused(official_checkpoint, published):
    published("0" * 64)
    with pytest.raises(InputError) as caught:
        load_backbone("dinobloom-s", str(official_checkpoint))
    message = str(caught.value)
    assert str(official_checkpoint) in message and "0" * 64 in message and file_digest(official_checkpoint) in message
    assert "\n" not in message


BAD_FILES = {  # name: (what the file holds, a fragment of the one-line refusal)
    "vit-b": (lambda: {"teacher": {f"backbone.{k}": v for k, v in random_backbone(768, 1).items()}},
              "embedding width 768, but dinobloom-s"),
    "11 blocks": (lambda: {"teacher": {f"backbone.{k}": v for k, v in random_backbone(384, 11).items()}},
                  "tensor names differ"),
    "registers": (lambda: {"teacher": {f"backbone.{k}": v for k, v in
                                       random_backbone(384, 1, register_tokens=torch.zeros(1, 4, 384)).items()}},
                  "4 register tokens"),
    "518 px grid": (lambda: {"teacher": {f"backbone.{k}": v for k, v in
                                         random_backbone(384, 1, pos_embed=torch.zeros(1, 1 + 37 * 37, 384)).items()}},
                    "pos_embed shape (1, 1370, 384)"),
    "no teacher": (lambda: {"student": {f"backbone.{k}": v for k, v in random_backbone(384, 1).items()}},
                   "no 'teacher' state dict"),
    "timm state dict": (lambda: random_backbone(384, 1), "no 'teacher' state dict"),
    "not a checkpoint": (lambda: b"\x00 not a checkpoint", "not a loadable weights file"),
    "stray teacher entry": (lambda: {"teacher": {"backbone.cls_token": torch.zeros(1, 1, 384), "center": torch.zeros(3)}},
                            "'center'"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_wrong_files_are_refused_in_one_line(tmp_path, tiny_root, published, kind):
    """Digest unknown (as for B/L/G), so the structure is what refuses; through extract.py, as a user sees it."""
    published(None)
    content, fragment = BAD_FILES[kind]
    path = tmp_path / "DinoBloom-S.pth"
    content = content()
    path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
    result = run_main(extract_cli.main, ["--root", str(tiny_root), "--out", str(tmp_path / "e.h5"), "--model", "dinobloom-s",
                                         "--weights", str(path), *CLI_ARGS])
    assert str(path) in assert_one_line_error(result, fragment)
    assert not (tmp_path / "e.h5").exists()


@pytest.mark.parametrize("extra, fragment", [
    ([], "needs --weights FILE: download DinoBloom-S.pth from https://zenodo.org/records/10908163"),
    (["--weights", "hub"], "needs --weights FILE"),
    (["--weights", "NOFILE"], "weights file not found"),
    (["--weights", "GARBAGE"], "is not the published"),  # the digest is checked before the file is read
    (["--weights", "CKPT", "--crop", "112"], "--crop 112: dinobloom-s needs a centre crop of at least 130 px"),
    (["--weights", "CKPT", "--input-size", "256"], "--input-size 256: dinobloom-s takes 224 px only (patch 14, 16x16"),
])
def test_cli_refusals(tmp_path, tiny_root, official_checkpoint, published, extra, fragment):
    published(file_digest(official_checkpoint))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00 not a checkpoint")
    paths = {"NOFILE": str(tmp_path / "none.pth"), "GARBAGE": str(garbage), "CKPT": str(official_checkpoint)}
    extra = [paths.get(arg, arg) for arg in extra]
    result = run_main(extract_cli.main, ["--root", str(tiny_root), "--out", str(tmp_path / "e.h5"), "--model", "dinobloom-s",
                                         *extra, *CLI_ARGS])
    assert_one_line_error(result, fragment)


def test_timm_models_keep_their_defaults():
    model, _ = load_backbone(DEFAULT_MODEL, None)
    assert registry.registered_of(model) is None
    prep = resolve_preprocessing(model, None, None)
    assert (prep.crop, prep.input_size, prep.mean) == (112, 112, (0.5, 0.5, 0.5))
    assert resolve_preprocessing(model, 64, 96).input_size == 96


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def tiny_root(tmp_path, synthetic_cell_images) -> Path:
    pool = synthetic_cell_images
    return write_dataset(tmp_path / "tiny", {"trainset": {"A0": pool[0:2], "A1": pool[2:4]}, "testset": {"B0": pool[4:5]}})


def test_extract_with_dinobloom_s_end_to_end(tmp_path, tiny_root, official_checkpoint, source_model, published):
    digest = file_digest(official_checkpoint)
    published(digest)
    out = tmp_path / "e.h5"
    result = run_main(extract_cli.main, ["--root", str(tiny_root), "--out", str(out), "--model", "dinobloom-s",
                                         "--weights", str(official_checkpoint), "--crop", "160", *CLI_ARGS])
    assert result.code == 0, result.stderr
    attrs = read_provenance(out)
    assert attrs["model"] == "dinobloom-s" and attrs["weights_source"] == "file:DinoBloom-S.pth"
    assert attrs["weights_file_sha256"] == digest
    assert attrs["weights_sha256"] == state_dict_sha256(source_model.state_dict())
    prep = json.loads(attrs["preprocessing"])
    assert prep == {"image_size": 224, "crop": 160, "input_size": 224, "interpolation": "bicubic",
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    bags = load_bags(out)[1]
    assert {k: b.embeddings.shape for k, b in bags.items()} == {"A0": (2, 384), "A1": (2, 384), "B0": (1, 384)}
    # the file's embeddings are the source model's CLS tokens of the 160 px centre crops resized to 224
    transform = build_transform(resolve_preprocessing(load_backbone("dinobloom-s", str(official_checkpoint))[0], 160, None))
    folder = tiny_root / "trainset" / "A0"
    x = torch.stack([transform(Image.open(folder / name)) for name in bags["A0"].filenames])
    with torch.inference_mode():
        expected = source_model(x).numpy()
    assert np.allclose(bags["A0"].embeddings, expected, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dinobloom_s_on_cuda_fp32_and_bf16(official_checkpoint, source_model, published):
    from lymphocytosis.extract.embedder import Embedder

    published(file_digest(official_checkpoint))
    model, _ = load_backbone("dinobloom-s", str(official_checkpoint))
    x = torch.stack([build_transform(resolve_preprocessing(model, None, None))(image) for image in cell_images(6)])
    with torch.inference_mode():
        expected = source_model(x)
    for precision, floor in (("fp32", 0.999), ("bf16", 0.99)):
        got = torch.from_numpy(Embedder(model, torch.device("cuda"), precision, tta=False, batch_size=4)(x, "gpu"))
        assert torch.isfinite(got).all() and got.shape == expected.shape
        assert float(torch.nn.functional.cosine_similarity(got, expected).min()) > floor, precision
