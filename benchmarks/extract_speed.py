#!/usr/bin/env python
"""Images per second of extract.py against a plain loop, same model, same settings, same run.

The plain loop is what one writes first: for each patient, decode its images, apply timm's transform
(centre crop, then `create_transform` for the model's data config), stack them, run the model (eval mode,
no_grad), one patient at a time. extract.py adds: BatchNorm folded into the convolutions, channels_last,
inference_mode, no resize step when the crop is already the input size (identical output), chunks of 128
images, and on CUDA, DataLoader workers decoding the next patient while the model runs.

    python benchmarks/extract_speed.py --root /data/dlmi --patients 12 --crop 224 112
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm.data
import torch
from bench_data import benchmark_dataset
from PIL import Image
from torchvision import transforms

from lymphocytosis.contract.layout import discover_patients, list_cell_images
from lymphocytosis.extract.backbones import DEFAULT_MODEL, load_backbone
from lymphocytosis.extract.extraction import ExtractSettings, extract
from lymphocytosis.extract.preprocessing import resolve_preprocessing


def plain_loop(root: Path, crop: int, batch_limit: int | None = None) -> tuple[int, float]:
    model, _ = load_backbone(DEFAULT_MODEL, None)
    prep = resolve_preprocessing(model, crop, None)
    transform = transforms.Compose([
        transforms.CenterCrop(crop),
        timm.data.create_transform(input_size=(3, crop, crop), interpolation=prep.interpolation, mean=prep.mean,
                                   std=prep.std, crop_pct=1.0, crop_mode="center"),
    ])
    n_images = 0
    started = time.perf_counter()
    with torch.no_grad():
        for patient in discover_patients(root):
            images = [transform(Image.open(path).convert("RGB")) for path in list_cell_images(patient.folder)]
            if images:
                model(torch.stack(images))
                n_images += len(images)
    return n_images, time.perf_counter() - started


def main():
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="challenge-layout dataset (default: a synthetic one)")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--crop", type=int, nargs="+", default=[224, 112])
    parser.add_argument("--workers", type=int, default=None, help="as extract.py (default: 0 on CPU)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = benchmark_dataset(args.root, args.patients, tmp)
        print(f"dataset: {args.root or 'synthetic'} ({args.patients} patients); torch threads {torch.get_num_threads()}")
        print("| crop | plain loop img/s | extract.py img/s | ratio |")
        print("|------|------------------|------------------|-------|")
        for crop in args.crop:
            n_plain, t_plain = plain_loop(root, crop)
            settings = ExtractSettings(model=DEFAULT_MODEL, weights=None, crop=crop, input_size=None, tta=False,
                                       precision="fp32", dtype="float32", batch_size=args.batch_size,
                                       workers=args.workers, device="cpu", views=False)
            summary = extract(root, tmp / f"bench_{crop}.h5", settings)
            plain_rate = n_plain / t_plain
            fast_rate = summary.images_per_second
            print(f"| {crop:4d} | {plain_rate:16.1f} | {fast_rate:16.1f} | {fast_rate / plain_rate:5.2f} |", flush=True)


if __name__ == "__main__":
    main()
