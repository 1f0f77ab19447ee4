#!/usr/bin/env python
"""Extraction speed on a GPU box: the model alone against the whole extraction path, fp32 against bf16.

For EfficientNet-Lite0 at 112 px (the default), Lite0 at 224 px and ViT-S/14 at 224 px (dinobloom-s's
architecture, random weights written as a DinoBloom checkpoint: speed does not depend on the values), prints

- forward img/s: `Embedder` (the extraction's own model wrapper: host-to-device copy, model, copy back) on
  images decoded beforehand, best of 3 passes after a warm-up;
- end-to-end img/s: the public `extract()` on a whole dataset (decode in DataLoader workers + model + writing
  each patient's part), as `extract.py` reports it; the ratio end-to-end / forward shows what decoding and
  writing cost;
- peak GPU memory of each (`torch.cuda.max_memory_allocated`), on CUDA only;
- how far the embeddings of 64 images are from CPU fp32's (largest absolute difference over the largest
  absolute value): CUDA and bf16 are not bit-identical to the CPU, and this says by how much.

No network: the dataset is synthetic (`lymphocytosis.synthetic`, ~3,200 images by default) unless --root
names one; Lite0 uses the embedded weights. One command, a few minutes at most on one GPU:

    python benchmarks/gpu_extract.py                       # CUDA when present; ~3,200 synthetic images
    python benchmarks/gpu_extract.py --tiny --device cpu   # smoke test: 20 images, 16 for the forward pass
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # extract()'s progress bar, read when tqdm is imported: the table is the output

import torch
from bench_data import benchmark_dataset
from PIL import Image

from lymphocytosis.contract.layout import discover_patients, list_cell_images
from lymphocytosis.extract import registry
from lymphocytosis.extract.backbones import DEFAULT_MODEL, load_backbone
from lymphocytosis.extract.embedder import Embedder, resolve_device
from lymphocytosis.extract.extraction import ExtractSettings, extract
from lymphocytosis.extract.preprocessing import build_transform, resolve_preprocessing
from lymphocytosis.files import atomic_write_json

CONFIGS = (("lite0 @112", DEFAULT_MODEL, 112), ("lite0 @224", DEFAULT_MODEL, 224), ("ViT-S/14 @224", "dinobloom-s", 224))
CONFIG_KEYS = {"lite0-112": CONFIGS[0], "lite0-224": CONFIGS[1], "vits-224": CONFIGS[2]}


@dataclass
class Row:
    config: str
    precision: str
    forward_ips: float
    e2e_ips: float
    e2e_seconds: float  # the whole extract() call: model load, embedding, assembling the file
    forward_peak_mib: float | None
    e2e_peak_mib: float | None
    n_images: int
    vs_cpu_fp32: float  # max |embedding - CPU fp32 embedding| / max |CPU fp32 embedding|, on 64 images

    def markdown(self) -> str:
        def mib(value):
            return "-" if value is None else f"{value:,.0f}"

        return (f"| {self.config} | {self.precision} | {self.forward_ips:,.0f} | {self.e2e_ips:,.0f} | "
                f"{self.e2e_ips / self.forward_ips:.2f} | {mib(self.forward_peak_mib)} | {mib(self.e2e_peak_mib)} | "
                f"{self.e2e_seconds:.1f} | {self.vs_cpu_fp32:.1e} |")


def random_dinobloom_s(path: Path) -> Path:
    """A random ViT-S/14 saved in DinoBloom's layout, and the registry told that its digest is not known (the
    published one is of the real file), so that extract() loads it through the real DinoBloom path."""
    entry = registry.REGISTRY["dinobloom-s"]
    registry.REGISTRY["dinobloom-s"] = replace(entry, file_sha256=None)
    model = registry.build_registered(entry)
    teacher = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    teacher["backbone.mask_token"] = torch.zeros(1, entry.feature_dim)
    torch.save({"teacher": teacher}, path)
    return path


def decoded_images(root: Path, prep, n: int) -> torch.Tensor:
    """`n` images of the dataset through the extraction's own transform (repeated if it has fewer)."""
    transform = build_transform(prep)
    paths = [p for patient in discover_patients(root) for p in list_cell_images(patient.folder)][:n]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(transform(image))
    batch = torch.stack(images)
    return batch.repeat((n + len(batch) - 1) // len(batch), 1, 1, 1)[:n]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


CHECKED = 64  # images compared with CPU fp32


def cpu_reference(model_name: str, weights: str | None, images: torch.Tensor, batch_size: int):
    model, _ = load_backbone(model_name, weights)
    return Embedder(model, torch.device("cpu"), "fp32", tta=False, batch_size=batch_size)(images[:CHECKED], "reference")


def relative_difference(embeddings, reference) -> float:
    return float(abs(embeddings - reference).max() / max(abs(reference).max(), 1e-12))


def forward_rate(model_name: str, weights: str | None, precision: str, images: torch.Tensor,
                 device: torch.device, batch_size: int) -> tuple[float, float | None, object]:
    """Best of 3 timed passes of `Embedder` over `images`, after one warm-up pass (cuDNN autotuning, lazy init);
    also the embeddings of the first CHECKED images, to compare with CPU fp32."""
    model, _ = load_backbone(model_name, weights)
    embedder = Embedder(model, device, precision, tta=False, batch_size=batch_size)
    if device.type == "cuda":
        images = images.pin_memory()
    checked = embedder(images[:CHECKED], "check")
    embedder(images[:batch_size], "warm-up")
    reset_peak(device)
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        embedder(images, "forward")  # returns numpy: the device has finished
        seconds.append(time.perf_counter() - started)
    peak = peak_mib(device)
    del embedder, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return len(images) / min(seconds), peak, checked


def end_to_end(root: Path, out: Path, settings: ExtractSettings, device: torch.device) -> tuple[float, float, float | None]:
    reset_peak(device)
    started = time.perf_counter()
    summary = extract(root, out, settings, overwrite=True)
    wall = time.perf_counter() - started
    return summary.images_per_second, wall, peak_mib(device)


def run(root: Path, tmp: Path, args, device: torch.device) -> list[Row]:
    dinobloom_file = str(random_dinobloom_s(tmp / "DinoBloom-S-random.pth"))
    rows = []
    for config, model_name, crop in (CONFIG_KEYS[key] for key in args.configs):
        weights = dinobloom_file if model_name == "dinobloom-s" else None
        prep = resolve_preprocessing(load_backbone(model_name, weights)[0], crop, None)
        images = decoded_images(root, prep, args.forward_images)
        reference = cpu_reference(model_name, weights, images, args.batch_size)
        for precision in args.precisions:
            forward, forward_peak, checked = forward_rate(model_name, weights, precision, images, device,
                                                          args.batch_size)
            settings = ExtractSettings(model=model_name, weights=weights, crop=crop, input_size=None, tta=False,
                                       precision=precision, dtype="float32", batch_size=args.batch_size,
                                       workers=args.workers, device=device.type, views=False)
            e2e, wall, e2e_peak = end_to_end(root, tmp / f"{model_name}-{crop}-{precision}.h5", settings, device)
            n_images = sum(len(list_cell_images(p.folder)) for p in discover_patients(root))
            rows.append(Row(config, precision, forward, e2e, wall, forward_peak, e2e_peak, n_images,
                            relative_difference(checked, reference)))
            print(rows[-1].markdown(), flush=True)
    return rows


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="challenge-layout dataset (default: a synthetic one)")
    parser.add_argument("--patients", type=int, default=40,
                        help="patients: synthetic ones of 60-100 cells, or the first of --root's trainset (default 40)")
    parser.add_argument("--forward-images", type=int, default=1024, help="images per timed forward pass (default 1024)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="as extract.py (default: up to 8 on CUDA, 0 on CPU)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIG_KEYS), default=list(CONFIG_KEYS),
                        help="which of the three to run (default: all)")
    parser.add_argument("--tiny", action="store_true", help="smoke test: 4 patients of 4-6 cells, 16 forward images")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.tiny:
        args.patients, args.forward_images, args.batch_size = 4, 16, min(args.batch_size, 8)
    return args


def main():
    logging.basicConfig(level=logging.ERROR)  # the random DinoBloom file's "digest not checked" warning is expected
    args = parse_args()
    device = resolve_device(args.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cells = (4, 6) if args.tiny else (60, 100)
        root = benchmark_dataset(args.root, args.patients, tmp, cells)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"device: {name}; torch {torch.__version__}; dataset: {args.root or 'synthetic'}; batch {args.batch_size}; "
              f"workers {'auto' if args.workers is None else args.workers}; forward pass of {args.forward_images} images")
        print("| config | precision | forward img/s | end-to-end img/s | e2e / forward | forward peak MiB | "
              "e2e peak MiB | extract() s | vs CPU fp32 |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        rows = run(root, tmp, args, device)
    print(f"total {time.perf_counter() - started:.0f} s; {rows[0].n_images} images end to end per row")
    if args.json:
        atomic_write_json(args.json, {"device": name, "command": sys.argv, "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
