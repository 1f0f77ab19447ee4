"""Embed every cell image of a dataset (challenge layout) with a frozen pretrained network, into one HDF5 file.

    extract.py --root /data/dlmi                      # writes artifacts/dlmi/embeddings.h5
    extract.py --root /data/dlmi --device cuda:1      # one of several workers on one output: see the README

Interrupted (Ctrl-C, kill -9), the same command resumes where it stopped; rerun after images or CSVs changed,
it embeds only what changed.
"""

from __future__ import annotations

from pathlib import Path

from ..defaults import DEFAULT_BACKBONE, DEFAULT_CROP, MEASUREMENT_SETS, STAIN_METHODS, extraction_path
from ..errors import InputError
from ..extract.registry import REGISTRY
from .common import (
    Parser,
    add_run_options,
    changed_options,
    cli_main,
    default_root,
    int_in,
    parse_with_config,
    program,
    start_run,
)

PROG = "extract.py"


def build_parser() -> Parser:
    parser = Parser(prog=program(PROG, "extract"), description=__doc__)
    parser.add_argument("--root", type=Path, default=None,
                        help="the dataset: trainset/ and testset/ folders with their CSVs; default: $DATA, else "
                             "data/synthetic (`make demo` makes it)")
    parser.add_argument("--out", type=Path, default=None,
                        help="HDF5 to write; default: artifacts/<dataset folder name>/embeddings.h5")
    parser.add_argument("--model", default=DEFAULT_BACKBONE,
                        help=f"any timm model name, or {', '.join(REGISTRY)} (blood-cell ViTs; need --weights FILE)")
    parser.add_argument("--weights", default=None,
                        help="FILE (local checkpoint), 'hub' (timm's pretrained weights; uses the network) or "
                             "'embedded'; default: embedded for the default model (offline), hub for other timm models")
    parser.add_argument("--crop", type=int_in(16, 224), default=None,
                        help=f"centre crop in pixels of the 224 px image, where the cell is; default: {DEFAULT_CROP}, "
                             "224 for dinobloom-* (which refuse less than 130)")
    parser.add_argument("--input-size", type=int_in(16, 1024), default=None,
                        help="resize the crop to this many pixels; default: the crop size (dinobloom-*: 224, the only "
                             "size they take)")
    parser.add_argument("--features", choices=["pooled", "multiscale"], default="pooled",
                        help="pooled final features, or also the pooled output of every intermediate stage")
    parser.add_argument("--stain", choices=STAIN_METHODS, default="none",
                        help="stain control before embedding (or measuring): grayscale, reinhard (CIELAB statistics to "
                             "a reference) or slide (each image against its own background and red cells); recorded in "
                             "the provenance")
    parser.add_argument("--tta", action="store_true", help="average the 8 flips/rotations by 90 degrees of each cell")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16 autocast (GPU, or CPUs with AMX)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage dtype")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:K")
    parser.add_argument("--batch-size", type=int_in(1, 65536), default=128, help="images per forward pass")
    parser.add_argument("--workers", type=int_in(0, 256), default=None,
                        help="processes decoding images; default: 0 on CPU (measured faster on 2 cores), up to 8 on CUDA")
    parser.add_argument("--measure", choices=MEASUREMENT_SETS, default=None,
                        help="instead of embedding: measure each cell (morphometry: nucleus and cell size and shape, N/C "
                             "ratio, chromatin texture, cytoplasm basophilia; colour: raw colours, the stain shortcut's "
                             "baseline) into a file of the same format; --stain applies, --workers are measuring "
                             "processes; default: embed")
    parser.add_argument("--pixel-size", type=float, default=None,
                        help="with --measure: micrometres per pixel of the 224 px image (lengths in um, areas in um^2); "
                             "default: lengths in px")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an embeddings file made with other settings or from another dataset")
    parser.add_argument("--refuse-links", action="store_true",
                        help="skip patient folders and images that are symbolic links (recorded with the reason); "
                             "default: follow them, their targets recorded in the listing's fingerprint")
    add_run_options(parser)
    return parser


EMBEDDING_ONLY = ("model", "weights", "crop", "input_size", "features", "tta", "precision", "dtype", "batch_size", "device")


def check_options(parser: Parser, args) -> None:
    """Options that mean nothing for the chosen task are refused, not silently ignored."""
    if args.pixel_size is not None and not args.measure:
        raise InputError("--pixel-size applies to --measure only (embeddings have no units)")
    if args.measure:
        given = changed_options(parser, args, EMBEDDING_ONLY)
        if given:
            raise InputError(f"--measure {args.measure} does not use {', '.join(given)} (embedding options)")


def resolve(args, parser: Parser | None = None):
    """Fill in the defaults that depend on other settings (the dataset decides where the output goes); `parser`:
    the one that parsed `args` (its defaults tell which options were given)."""
    parser = parser or build_parser()
    if args.root is None:
        args.root = default_root()
        if not args.root.exists():
            raise InputError(f"no dataset given: pass --root PATH (a folder with trainset/ and testset/ in the challenge "
                             f"layout) or set DATA; `make demo` creates a synthetic one in {args.root}")
    check_options(parser, args)
    args.out = args.out or extraction_path(args.root, args.measure)
    return args


def settings_of(args):
    """The run's settings, checked with the dataset and the output (first), the device and the weights file
    before anything is written: a refused command leaves no log behind."""
    from ..extract.extraction import checked_patients

    checked_patients(args.root, args.out)
    if args.measure:
        from ..extract.morphometry import MeasurementSettings

        settings = MeasurementSettings(kind=args.measure, pixel_size_um=args.pixel_size, stain=args.stain)
        settings.validate()
        return settings
    from ..extract.backbones import weights_choice
    from ..extract.embedder import resolve_device
    from ..extract.extraction import ExtractSettings
    from ..extract.registry import registered_crop_and_size

    settings = ExtractSettings(
        model=args.model, weights=args.weights, crop=args.crop, input_size=args.input_size, tta=args.tta,
        precision=args.precision, dtype=args.dtype, batch_size=args.batch_size, workers=args.workers,
        device=args.device, features=args.features, stain=args.stain,
    )
    settings.validate()
    resolve_device(args.device)
    weights_choice(args.model, args.weights)
    if args.model in REGISTRY:
        registered_crop_and_size(REGISTRY[args.model], args.crop, args.input_size)
    return settings


@cli_main
def main(argv=None):
    parser = build_parser()
    args = resolve(parse_with_config(parser, argv, "extract"), parser)
    settings = settings_of(args)
    start_run(args, "extract", Path(args.out).parent)
    if args.measure:
        from ..extract.measuring import measure_dataset

        summary = measure_dataset(args.root, args.out, settings, overwrite=args.overwrite, workers=args.workers,
                                  follow_links=not args.refuse_links)
        print(f"{summary.out}: {summary.n_patients} patients, {summary.n_images} images measured")
        return 0
    from ..extract.extraction import extract

    summary = extract(args.root, args.out, settings, overwrite=args.overwrite, follow_links=not args.refuse_links)
    print(f"{summary.out}: {summary.n_patients} patients, {summary.n_images} images"
          f"{f', {summary.n_skipped} skipped (reasons in the log)' if summary.n_skipped else ''}")
    return 0
