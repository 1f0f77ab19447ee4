#!/usr/bin/env python
"""Check the DinoBloom loader against DINOv2's own model code, not against our reading of it.

DinoBloom's files are DINOv2 training checkpoints (`{"teacher": state_dict}` as DINOv2's `train.py` saves them:
the teacher `ModuleDict` of `backbone`, `dino_head`, `ibot_head`). This script builds those modules with
DINOv2's code (not a dependency of the tool: pass an unpacked copy, e.g. the PyPI wheel `dinov2==0.0.1.dev2`,
`pip download dinov2==0.0.1.dev2 --no-deps && unzip dinov2-*.whl -d dinov2-src`), randomises every tensor, saves
the teacher exactly as DINOv2 does, and checks for each size:

- S (full, 12 blocks) and a 2-block G-shaped model (SwiGLU `w12`/`w3`): our loader loads the file strictly and
  its embedding equals DINOv2's own `x_norm_clstoken` for the same images;
- S/B/L/G at full size (on the meta device, no memory): every tensor name and shape of the official backbone
  maps onto the registry's timm architecture.

    python tools/dinov2_layout_check.py --dinov2-src /tmp/dinov2-src
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm
import torch

from lymphocytosis.extract import registry
from lymphocytosis.extract.backbones import load_backbone, map_checkpoint_keys

OFFICIAL = {  # DINOv2's own constructors' arguments for each DinoBloom size (hubconf: vits14 ... vitg14)
    "dinobloom-s": ("vit_small", "mlp"), "dinobloom-b": ("vit_base", "mlp"),
    "dinobloom-l": ("vit_large", "mlp"), "dinobloom-g": ("vit_giant2", "swiglufused"),
}


def official_teacher(vits, dino_head_cls, arch: str, ffn: str, depth: int | None = None):
    kwargs = {"patch_size": 14, "img_size": 224, "init_values": 1e-5, "block_chunks": 0, "ffn_layer": ffn,
              "drop_path_uniform": True}  # (no linspace(...).item(), which the meta device cannot do)
    if depth is None:
        backbone = getattr(vits, arch)(**kwargs)
    else:  # a shallow model of the same width and block type, to run it on CPU
        width = {"vit_small": 384, "vit_giant2": 1536}[arch]
        backbone = vits.DinoVisionTransformer(embed_dim=width, depth=depth, num_heads=width // 64, mlp_ratio=4,
                                              block_fn=partial(vits.Block, attn_class=vits.MemEffAttention), **kwargs)
    heads = {name: dino_head_cls(in_dim=backbone.embed_dim, out_dim=64, hidden_dim=32, bottleneck_dim=16)
             for name in ("dino_head", "ibot_head")}
    return torch.nn.ModuleDict({"backbone": backbone, **heads})


def randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05 + (1.0 if tensor.dim() == 1 else 0.0))


def compare_outputs(vits, dino_head_cls, name: str, depth: int | None, tmp: Path) -> float:
    entry = registry.REGISTRY[name]
    arch, ffn = OFFICIAL[name]
    teacher = official_teacher(vits, dino_head_cls, arch, ffn, depth).eval()
    randomise(teacher, seed=0)
    path = tmp / f"{name}.pth"
    torch.save({"teacher": teacher.state_dict()}, path)  # exactly as DINOv2's train.py do_test()
    if depth is None:
        registry.REGISTRY[name] = replace(entry, file_sha256=None)  # a random file cannot have the published digest
        model, _ = load_backbone(name, str(path))
    else:
        model = timm.create_model(entry.architecture, pretrained=False, img_size=224, num_classes=0,
                                  global_pool="token", depth=depth).eval()
        checkpoint = torch.load(path, weights_only=True)
        model.load_state_dict(map_checkpoint_keys(registry.timm_state_dict(checkpoint, entry, str(path)),
                                                  model.state_dict(), str(path)), strict=True)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = teacher["backbone"](x)  # head is Identity: x_norm_clstoken
        got = model(x)
    return float((expected - got).abs().max() / expected.abs().max())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dinov2-src", type=Path, required=True, help="folder holding DINOv2's `dinov2` package")
    args = parser.parse_args()
    sys.path.insert(0, str(args.dinov2_src))
    from dinov2.layers.dino_head import DINOHead
    from dinov2.models import vision_transformer as vits

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, depth in (("dinobloom-s", None), ("dinobloom-g", 2)):
            error = compare_outputs(vits, DINOHead, name, depth, Path(tmp))
            print(f"{name} ({depth or 'all'} blocks): max |DINOv2 - ours| / max |DINOv2| = {error:.2e}")
            assert error < 1e-5, error
    for name, entry in registry.REGISTRY.items():
        arch, ffn = OFFICIAL[name]
        with torch.device("meta"):
            teacher = official_teacher(vits, DINOHead, arch, ffn)
            model = timm.create_model(entry.architecture, pretrained=False, img_size=224, num_classes=0)
        state = {"teacher": teacher.state_dict()}
        mapped = map_checkpoint_keys(registry.timm_state_dict(state, entry, name), model.state_dict(), name)
        n_official = sum(1 for k in state["teacher"] if k.startswith("backbone."))
        print(f"{name}: {n_official} official backbone tensors (mask_token dropped) -> {len(mapped)} timm tensors, "
              f"names and shapes match {entry.architecture}")


if __name__ == "__main__":
    main()
