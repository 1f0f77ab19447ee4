"""Every command's options, declared once (see options.py): the commands build their parsers from these tables
and a settings file (`--config`, config.py) is checked against them, without building any parser.

To add an option to a command, add one line to its table, as to argparse (`PREDICT.add("--flag", ...)`); a part
several commands share (DATA, TUNED, CV_DESIGN, RUN) is one table listed in each of their `COMMANDS` entries.
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_CROP,
    DEFAULT_HEARTBEAT_S,
    FeatureKind,
    MeasurementSet,
    Precision,
    Stain,
    StorageDtype,
    choice_values,
)
from ..evidence import DEFAULT_MAX_WITHOUT_CELLS, share
from ..extract.registry import REGISTRY
from .options import Option, Options, float_in, int_in, options_of, positive_float

# --- every command --------------------------------------------------------------------------------------------------

RUN = Options(group="every command")
RUN.add("-c", "--config", type=Path, default=None,
        help="TOML file of settings (top-level keys for every command, a [extract], [cv], [fit], [predict], [report] "
             "or [tune] table for one); options given here win; default: none")
RUN.add("-v", "--verbose", action="store_true", help="also show debugging messages")
RUN.add("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
RUN.add("--version", action="version", version=f"lymphocytosis {__version__}")

# --- extract.py -----------------------------------------------------------------------------------------------------

EXTRACT = Options()
EXTRACT.add("--root", type=Path, default=None,
            help="the dataset: trainset/ and testset/ folders with their CSVs; default: $DATA, else data/synthetic "
                 "(`make demo` makes it)")
EXTRACT.add("--out", type=Path, default=None,
            help="HDF5 to write; default: artifacts/<dataset folder name>/embeddings.h5")
EXTRACT.add("--model", default=DEFAULT_BACKBONE,
            help=f"any timm model name, or {', '.join(REGISTRY)} (blood-cell ViTs; need --weights FILE)")
EXTRACT.add("--weights", default=None,
            help="FILE (local checkpoint), 'hub' (timm's pretrained weights; uses the network) or 'embedded'; "
                 "default: embedded for the default model (offline), hub for other timm models")
EXTRACT.add("--crop", type=int_in(16, 224), default=None,
            help=f"centre crop in pixels of the 224 px image, where the cell is; default: {DEFAULT_CROP}, 224 for "
                 "dinobloom-* (which refuse less than 130)")
EXTRACT.add("--input-size", type=int_in(16, 1024), default=None,
            help="resize the crop to this many pixels; default: the crop size (dinobloom-*: 224, the only size they take)")
EXTRACT.add("--features", choices=choice_values(FeatureKind), default=FeatureKind.POOLED.value,
            help="pooled final features, or also the pooled output of every intermediate stage")
EXTRACT.add("--stain", choices=choice_values(Stain), default=Stain.NONE.value,
            help="stain control before embedding (or measuring): grayscale, reinhard (CIELAB statistics to a "
                 "reference) or slide (each image against its own background and red cells); recorded in the provenance")
EXTRACT.add("--tta", action="store_true", help="average the 8 flips/rotations by 90 degrees of each cell")
EXTRACT.add("--precision", choices=choice_values(Precision), default=Precision.FP32.value,
            help="bf16 autocast (GPU, or CPUs with AMX)")
EXTRACT.add("--dtype", choices=choice_values(StorageDtype), default=StorageDtype.FLOAT32.value, help="storage dtype")
EXTRACT.add("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:K")
EXTRACT.add("--batch-size", type=int_in(1, 65536), default=128, help="images per forward pass")
EXTRACT.add("--workers", type=int_in(0, 256), default=None,
            help="processes decoding images; default: 0 on CPU (measured faster on 2 cores), up to 8 on CUDA")
EXTRACT.add("--measure", choices=choice_values(MeasurementSet), default=None,
            help="instead of embedding: measure each cell (morphometry: nucleus and cell size and shape, N/C ratio, "
                 "chromatin texture, cytoplasm basophilia; colour: raw colours, the stain shortcut's baseline) into a "
                 "file of the same format; --stain applies, --workers are measuring processes; default: embed")
EXTRACT.add("--pixel-size", type=float, default=None,
            help="with --measure: micrometres per pixel of the 224 px image (lengths in um, areas in um^2); "
                 "default: lengths in px")
EXTRACT.add("--no-views", action="store_true",
            help="do not embed the training views: one randomly re-compressed, re-stained, re-coloured, blurred or "
                 "zoomed copy of each cell, written beside --out as <name>.views.h5, from which the cell score learns "
                 "to ignore acquisition differences between laboratories (it doubles the extraction time)")
EXTRACT.add("--overwrite", action="store_true",
            help="replace an embeddings file made with other settings or from another dataset")
EXTRACT.add("--refuse-links", action="store_true",
            help="skip patient folders and images that are symbolic links (recorded with the reason); without it, "
                 "they are followed and their targets recorded in the listing's fingerprint")

# --- stage 2: model.py and tune.py ----------------------------------------------------------------------------------


def data_options(measurements_use: str) -> Options:
    """The stage-2 inputs, shared by model.py and tune.py; `measurements_use` says what the command does with a
    measurement file."""
    data = Options()
    data.add("--embeddings", type=Path, action="append", default=None,
             help="HDF5 from extract.py; repeat it to combine backbones (e.g. --embeddings lite0.h5 --embeddings "
                  "dinobloom-s.h5), each then gets its own cell score; default: artifacts/<$DATA's folder>/"
                  "embeddings.h5, or the only artifacts/*/embeddings.h5")
    data.add("--root", type=Path, default=None,
             help="dataset folder for the CSVs; default: the one recorded in the embeddings file")
    data.add("--measurements", type=Path, action="append", default=None,
             help="a measurement file of the same images (extract.py --measure morphometry); repeatable; "
                  f"{measurements_use}; default: none")
    return data


DATA = data_options("its features join the model (with the defaults: each quantity's per-patient median)")

TUNED = Options()
TUNED.add("--params", default="auto",
          help="'auto' (tune.py's best for these embeddings and patients, if saved, else the defaults), 'default', or "
               "the path of a parameters file")

CV_DESIGN = Options()
CV_DESIGN.add("--folds", type=int_in(2, 100), default=5, help="folds of the stratified CV over patients")
CV_DESIGN.add("--repeats", type=int_in(1, 1000), default=10, help="repeats of the CV, each with other folds")
CV_DESIGN.add("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of the folds (same seed, same result)")
CV_DESIGN.add("--cv-dir", type=Path, default=None,
              help="saved CV results, one folder per settings and folds (earlier ones are kept); default: "
                   "<artifacts>/cv")

EVIDENCE = Options()
EVIDENCE.add("--max-without-cells", type=share, default=DEFAULT_MAX_WITHOUT_CELLS,
             help="largest share of labelled patients without a readable cell image that cv and fit train on, and "
                  "evaluate judges (more is refused, naming them)")

PREVALENCE = Options()
PREVALENCE.add("--prevalence", type=float_in(0.0, 1.0, include_high=False), default=None,
               help="also give PPV and NPV at this prevalence of tumoral (0-1); default: the cohort's only")

RULE = Options()
RULE.add("--sensitivities", type=float_in(0.5, 1.0), nargs="+", default=[0.95, 0.98],
         help="target sensitivities for tumoral: a threshold for each (sens95, ...), chosen on out-of-fold predictions "
              "of the training patients only")

CV = Options()
CV.add("--json", type=Path, default=None, help="also write the headline results here; default: not written")

FIT = Options()
FIT.add("--model-dir", type=Path, default=None, help="where to save it; default: <artifacts>/model")
FIT.add("--cv-dir", type=Path, default=None,
        help="saved CV results quoted in MODEL_CARD.md when they are of these data and settings; default: <artifacts>/cv")

PREDICT = Options()
PREDICT.add("--model-dir", type=Path, default=None, help="the saved model; default: <artifacts>/model")
PREDICT.add("--out", type=Path, default=None, help="ID,LABEL,PROBABILITY per patient; default: <artifacts>/predictions.csv")
PREDICT.add("--submission", type=Path, default=None,
            help="the challenge's Id,Predicted file; default: <artifacts>/submission.csv")
PREDICT.add("--all", action="store_true", help="predict every patient, labelled ones included")
PREDICT.add("--strict-drift", action="store_true",
            help="exit with code 4 (after writing the predictions) when the cohort is out of the training distribution "
                 "or cannot be checked; default: say so and exit 0")
PREDICT.add("--operating-point", default="balanced",
            help="the threshold that decides LABEL: 'balanced' (0.5), or one the model was fitted with (sens95, sens98, "
                 "...: model.py fit --sensitivities)")
PREDICT.add("--clinical-only-fallback", action="store_true",
            help="predict patients without a readable cell image with the clinical-only model saved by fit, marked "
                 "'clinical only' in the EVIDENCE column (labelled at its balanced threshold, whatever the "
                 "--operating-point); without it, they are refused")

REPORT = Options()
REPORT.add("--out-dir", type=Path, default=None, help="default: <artifacts>/report")
REPORT.add("--patients", default="all", help="'all', 'none' or comma-separated IDs for per-patient pages")
REPORT.add("--stain-cv", type=Path, default=None,
           help="saved CV (model.py cv --cv-dir) of the same settings on embeddings extracted with --stain: the report "
                "then says how much of the image signal survives stain normalisation; default: none")

EVALUATE = Options()
EVALUATE.add("--model-dir", type=Path, default=None, required=True,
             help="the saved model (model.py fit --model-dir); required, no default")
EVALUATE.add("--out-dir", type=Path, default=None, help="default: <artifacts of the cohort>/evaluation")

TUNE = Options()
TUNE.add("--trials", type=int_in(1, 1_000_000), default=100,
         help="finished trials wanted in the study in all (earlier runs and all workers together), not a number "
              "to add")
TUNE.add("--timeout", type=positive_float, default=None,
         help="stop starting new trials after this many seconds; default: no limit")
TUNE.add("--storage", default=None,
         help="SQLAlchemy URL (sqlite:///..., postgresql://...), or journal:///path/study.log; default: "
              "sqlite:///<artifacts>/tune.sqlite3 (one worker)")
TUNE.add("--heartbeat", type=int_in(1, 86_400), default=DEFAULT_HEARTBEAT_S, metavar="SECONDS",
         help="database storages: a running trial's heartbeat period; a trial silent for twice as long (its worker was "
              "killed) is marked failed by the next worker")
TUNE.add("--study-name", default=None,
         help="default: derived from the embeddings' provenance, the labelled patients and the CV design")
TUNE.add("--folds", type=int_in(2, 100), default=5, help="folds of each trial's CV")
TUNE.add("--repeats", type=int_in(1, 1000), default=2, help="repeats of each trial's CV")
TUNE.add("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of the folds and of the search")
TUNE.add("--best-params", type=Path, default=None,
         help="where the best settings go (and model.py finds them); default: <artifacts>/best_params.json")
TUNE.add("--nested", action="store_true",
         help="run the whole search inside each fold of an outer CV and report held-out accuracy; saves the "
              "estimate (--json), not settings")
TUNE.add("--outer-folds", type=int_in(2, 100), default=5, help="with --nested: outer folds")
TUNE.add("--outer-repeats", type=int_in(1, 1000), default=1, help="with --nested: outer repeats")
TUNE.add("--json", type=Path, default=None,
         help="with --nested: where the results go (the report's headline for tuned settings); default: "
              "<artifacts>/nested/<design>.json")

# --- the commands: each one's tables, in --help order; a settings file's tables are these names ---------------------

COMMANDS: dict[str, tuple[Options, ...]] = {
    "extract": (EXTRACT, RUN),
    "cv": (DATA, RUN, TUNED, CV_DESIGN, EVIDENCE, PREVALENCE, RULE, CV),
    "fit": (DATA, RUN, TUNED, EVIDENCE, RULE, FIT),
    "predict": (DATA, RUN, PREDICT),
    "report": (DATA, RUN, TUNED, CV_DESIGN, EVIDENCE, PREVALENCE, RULE, REPORT),
    "evaluate": (DATA, RUN, EVALUATE, EVIDENCE, PREVALENCE),
    "tune": (data_options("the search then also chooses how to use them"), TUNE, RUN),
}
MODEL_COMMANDS = ("cv", "fit", "predict", "report", "evaluate")  # model.py's subcommands


def command_options(command: str) -> list[Option]:
    """A command's options, in --help order."""
    return options_of(*COMMANDS[command])
