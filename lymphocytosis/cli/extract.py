"""Embed every cell image of a dataset (challenge layout) with a frozen pretrained network, into one HDF5 file.

    extract.py --root /data/dlmi                      # writes artifacts/dlmi/embeddings.h5
    extract.py --root /data/dlmi --device cuda:1      # one of several workers on one output: see the README

Interrupted (Ctrl-C, kill -9), the same command resumes where it stopped; rerun after images or CSVs changed,
it embeds only what changed.
"""

from __future__ import annotations

from pathlib import Path

from ..defaults import FeatureKind, MeasurementSet, Precision, Stain, StorageDtype, extraction_path
from ..errors import InputError
from .catalog import COMMANDS
from .common import Parser, Run, changed_options, cli_main, default_root, parse_with_config, start_run
from .options import add_options

PROG = "extract.py"


def build_parser(run: Run | None = None) -> Parser:
    run = run or Run()
    parser = Parser(prog=run.program(PROG, "extract"), description=run.words(__doc__))
    return add_options(parser, *COMMANDS["extract"], words=run.words)


EMBEDDING_ONLY = ("model", "weights", "crop", "input_size", "features", "tta", "precision", "dtype", "batch_size", "device",
                  "no_views")


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


def plan_of(args):
    """The run's typed plan (extract/plan.py): every CSV row checked with stage 2's rules first (before torch is
    even imported: a typo in a CSV costs seconds) and the CSVs read once, the dataset listed and the output
    checked, then the device, the weights and the crop, before anything is written: a refused command leaves no
    log behind. The run consumes the plan; nothing is checked or read twice."""
    from ..contract.clinical import check_clinical_csvs

    tables = check_clinical_csvs(args.root)
    if args.measure:
        from ..extract.morphometry import MeasurementSettings
        from ..extract.plan import plan_measuring

        settings = MeasurementSettings(kind=MeasurementSet(args.measure), pixel_size_um=args.pixel_size,
                                       stain=Stain(args.stain))
        return plan_measuring(args.root, args.out, settings, args.overwrite, args.workers, tables=tables,
                              follow_links=not args.refuse_links)
    from ..extract.plan import ExtractSettings, plan_embedding

    settings = ExtractSettings(
        model=args.model, weights=args.weights, crop=args.crop, input_size=args.input_size, tta=args.tta,
        precision=Precision(args.precision), dtype=StorageDtype(args.dtype), batch_size=args.batch_size,
        workers=args.workers, device=args.device, features=FeatureKind(args.features), stain=Stain(args.stain),
        views=not args.no_views,
    )
    return plan_embedding(args.root, args.out, settings, args.overwrite, tables=tables, follow_links=not args.refuse_links)


@cli_main
def main(argv, run: Run):
    parser = build_parser(run)
    args = resolve(parse_with_config(parser, argv, run, "extract"), parser)
    plan = plan_of(args)
    run.home = Path(args.out).parent
    start_run(args, run, "extract")
    if args.measure:
        from ..extract.measuring import run_measuring

        summary = run_measuring(plan, run.progress)
        print(final_line(summary, "images measured"))
        return 0
    from ..extract.extraction import run_embedding

    print(final_line(run_embedding(plan, run.progress), "images"))
    return 0


def final_line(summary, images: str) -> str:
    """What the file holds, every patient counted: those without a single cell too (they reach stage 2 with
    their clinical values only), named when few."""
    from ..contract.store import patients_without_cells

    empty = patients_without_cells(summary.out)
    named = f" ({', '.join(empty)})" if 0 < len(empty) <= 5 else ""
    skipped = f"{summary.n_skipped} skipped{' (reasons in the log)' if summary.n_skipped else ''}"
    return (f"{summary.out}: {summary.n_patients} patients, {summary.n_images} {images}, {skipped}, "
            f"{len(empty)} patients without images{named}")
