"""`extract.py`: embed every cell image with a frozen pretrained CNN into one HDF5 file.

    python extract.py --root path/to/dataset --out artifacts/embeddings.h5

Interrupted (Ctrl-C, kill -9), the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..defaults import DEFAULT_BACKBONE as DEFAULT_MODEL
from ..defaults import DEFAULT_EMBEDDINGS as DEFAULT_OUT
from ..errors import InputError
from .common import cli_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("DATA", "data/synthetic")),
                        help="dataset in the challenge layout (default: $DATA or data/synthetic)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"HDF5 to write (default: {DEFAULT_OUT})")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"any timm model name (default: {DEFAULT_MODEL})")
    parser.add_argument("--weights", default=None,
                        help="FILE (local checkpoint), 'hub' (timm's pretrained weights; uses the network) or "
                             "'embedded' (default for the default model; offline)")
    parser.add_argument("--crop", type=int, default=112,
                        help="centre crop in pixels of the 224 px image; cells are centred (default: 112)")
    parser.add_argument("--input-size", type=int, default=None, help="resize the crop to this (default: the crop size)")
    parser.add_argument("--features", choices=["pooled", "multiscale"], default="pooled",
                        help="pooled final features, or also the pooled output of every intermediate stage")
    parser.add_argument("--stain", choices=["none", "grayscale", "reinhard", "slide"], default="none",
                        help="stain control before embedding: grayscale, reinhard (CIELAB statistics to a reference) or "
                             "slide (each image against its own background and red cells); recorded in the provenance")
    parser.add_argument("--tta", action="store_true", help="average the 8 flips/rotations by 90 degrees per cell")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 autocast (GPU; CPUs with AMX)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage dtype")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass, within a patient (default: 128)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader processes decoding images (default: 0 on CPU, where decoding beside the "
                             "model's threads was measured slower; up to 8 on CUDA)")
    parser.add_argument("--measure", choices=["morphometry", "colour"], default=None,
                        help="instead of embedding: measure each cell (morphometry: nucleus and cell size and shape, "
                             "N/C ratio, chromatin texture, cytoplasm basophilia; colour: raw colours, the stain "
                             "shortcut's baseline) into a file of the same format; --stain applies; --workers: processes")
    parser.add_argument("--pixel-size", type=float, default=None,
                        help="with --measure: micrometres per pixel of the 224 px image (lengths in um, areas in um^2); "
                             "default: px")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file or interrupted run")
    return parser.parse_args(argv)


EMBEDDING_ONLY = ("model", "weights", "crop", "input_size", "features", "tta", "precision", "dtype", "batch_size", "device")


def check_options(args) -> None:
    """Options that mean nothing for the chosen task are refused, not silently ignored."""
    if args.pixel_size is not None and not args.measure:
        raise InputError("--pixel-size applies to --measure only (embeddings have no units)")
    if args.measure:
        defaults = vars(parse_args([]))
        given = [f"--{name.replace('_', '-')}" for name in EMBEDDING_ONLY if getattr(args, name) != defaults[name]]
        if given:
            raise InputError(f"--measure {args.measure} does not use {', '.join(given)} (embedding options)")


@cli_main
def main(argv=None):
    args = parse_args(argv)
    check_options(args)
    if args.measure:
        from ..extract.measuring import measure_dataset
        from ..extract.morphometry import MeasurementSettings

        settings = MeasurementSettings(kind=args.measure, pixel_size_um=args.pixel_size, stain=args.stain)
        measure_dataset(args.root, args.out, settings, overwrite=args.overwrite, workers=args.workers)
        return 0
    from ..extract.extraction import ExtractSettings, extract

    settings = ExtractSettings(
        model=args.model, weights=args.weights, crop=args.crop, input_size=args.input_size, tta=args.tta,
        precision=args.precision, dtype=args.dtype, batch_size=args.batch_size, workers=args.workers,
        device=args.device, features=args.features, stain=args.stain,
    )
    extract(args.root, args.out, settings, overwrite=args.overwrite)
    return 0

