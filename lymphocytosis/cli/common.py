"""What every command shares: options and help, a config file, one log format, a log file per run, the
artifacts layout, and user errors as one line instead of a traceback."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import logging
import os
import sys
from pathlib import Path

from .. import __version__, progress
from ..defaults import ARTIFACTS, ArtifactPaths, artifact_paths, extraction_path
from ..errors import InputError
from ..files import atomic_write_text
from ..invocation import command
from ..passwords import masked
from .config import config_arguments, settings_toml

log = logging.getLogger("lymphocytosis")
TERMINAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RUN_LOG: Path | None = None  # this run's log file, named in the message of an unexpected error
CONSOLE = False  # run as the installed `lymphocytosis` command (not extract.py, model.py, tune.py)


def program(script: str, command: str = "") -> str:
    """The name a command's help and errors use: `extract.py` as a script, `lymphocytosis extract` installed."""
    return " ".join(filter(None, ("lymphocytosis", command))) if CONSOLE else script


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows every option's default (options whose default depends on
    others say it in their help instead of printing None)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if isinstance(action, argparse._StoreTrueAction) and action.dest not in {"verbose", "quiet"}:
            return f"{text} (default: off)"
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "%(default)" in text or hidden or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse whose errors are `InputError`s: one `error: ...` line and exit code 2, like every other refusal."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def int_in(low: int, high: int | None = None):
    """An argparse type: an integer from `low` to `high` (inclusive; no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected an integer {bound}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is out of range: expected a positive number")
    return value


def add_data_options(parser: argparse.ArgumentParser, measurements_use: str) -> None:
    """The stage-2 inputs, shared by model.py and tune.py; `measurements_use` says what the command does with a
    measurement file."""
    parser.add_argument("--embeddings", type=Path, action="append", default=None,
                        help="HDF5 from extract.py; repeat it to combine backbones (e.g. --embeddings lite0.h5 "
                             "--embeddings dinobloom-s.h5), each then gets its own cell score; default: "
                             "artifacts/<$DATA's folder>/embeddings.h5, or the only artifacts/*/embeddings.h5")
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset folder for the CSVs; default: the one recorded in the embeddings file")
    parser.add_argument("--measurements", type=Path, action="append", default=None,
                        help="a measurement file of the same images (extract.py --measure morphometry); repeatable; "
                             f"{measurements_use}; default: none")


def changed_options(parser: argparse.ArgumentParser, args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The options among `names` given another value than their default, as written on the command line: those
    that mean nothing for the chosen mode are refused, not silently ignored."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != parser.get_default(name)]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("every command")
    group.add_argument("-c", "--config", type=Path, default=None,
                       help="TOML file of settings (top-level keys for every command, a [extract], [cv], [fit], "
                            "[predict], [report] or [tune] table for one); options given here win; default: none")
    group.add_argument("-v", "--verbose", action="store_true", help="also show debugging messages")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    group.add_argument("--version", action="version", version=f"lymphocytosis {__version__}")


# --- the artifacts layout ------------------------------------------------------------------------------------------


def default_root() -> Path:
    return Path(os.environ.get("DATA", "data/synthetic"))


def default_embeddings() -> Path:
    """artifacts/<dataset>/embeddings.h5 of $DATA's dataset; else the only one extracted. None or several: an error
    that names the folder looked in (artifacts/ is relative to where the command runs) and what it holds."""
    if os.environ.get("DATA"):
        return extraction_path(Path(os.environ["DATA"]))
    found = sorted(ARTIFACTS.glob("*/embeddings.h5"))
    if len(found) == 1:
        return found[0]
    where = f"{ARTIFACTS.resolve()}{os.sep}"
    if not found:
        raise InputError(f"no extraction in {where} (artifacts/ is looked for in the folder you run the command "
                         f"from): run `{command('extract')} --root DATASET` first, or give --embeddings FILE")
    raise InputError(f"several extractions in {where}: {'; '.join(described(p) for p in found)}; choose one with "
                     "--embeddings")


def described(embeddings: Path) -> str:
    """An extraction and the dataset it was made from, as an error lists them."""
    from ..contract.store import read_attrs

    try:
        dataset = read_attrs(embeddings).get("dataset_root") or "dataset not recorded"
    except Exception:
        dataset = "unreadable"
    return f"{embeddings} (of {dataset})"


def resolve_data_options(args: argparse.Namespace) -> ArtifactPaths:
    """Fill the defaults of add_data_options; the artifacts layout of the (first) embeddings file, which is also
    where this run's log goes (`args._home`). A folder given to --embeddings means its embeddings.h5."""
    args.embeddings = [Path(p) / "embeddings.h5" if Path(p).is_dir() else p for p in args.embeddings or []]
    args.embeddings = args.embeddings or [default_embeddings()]
    args.measurements = args.measurements or []
    paths = artifact_paths(args.embeddings[0])
    args._home = paths.home
    return paths


def cohort_inputs(cohort) -> list[Path]:
    """The files a stage-2 run reads for its cohort (embeddings, measurements, the dataset's CSVs): no output may be
    one of them."""
    from ..contract.layout import split_csv_paths

    return [s.path for s in cohort.sets] + list(split_csv_paths(cohort.dataset_root).values())


# --- config file (see config.py) -----------------------------------------------------------------------------------


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None, command: str | None = None):
    """Parse `argv`; with --config, the file's settings go first and the command line on top. `command` names
    the config table to read; for a parser with subcommands (model.py) it is the subcommand given. The run's
    verbosity (-v, -q) applies from here on."""
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = Parser(prog=parser.prog, add_help=False)
    probe.add_argument("-c", "--config", type=Path)
    config = probe.parse_known_args(argv)[0].config
    if config is None:
        args = parser.parse_args(argv)
    elif command is not None:
        args = parser.parse_args([*config_arguments(config, command, parser, argv), *argv])
    else:
        choices = parser._subparsers._group_actions[0].choices
        index = next((i for i, token in enumerate(argv) if token in choices), None)
        if index is None:
            return parser.parse_args(argv)  # argparse says that the subcommand is missing
        extra = config_arguments(config, argv[index], choices[argv[index]], argv)
        args = parser.parse_args([*argv[: index + 1], *extra, *argv[index + 1:]])
    set_verbosity(args)
    return args


# --- logging and the run's record -----------------------------------------------------------------------------------


QUIET_LIBRARIES = ("matplotlib", "PIL", "h5py", "numba", "urllib3", "filelock", "fsspec")  # their DEBUG is noise


class MaskingFormatter(logging.Formatter):
    """Every message, on the terminal and in the run's log, with database passwords masked."""

    def format(self, record: logging.LogRecord) -> str:
        return masked(super().format(record))


class PendingRecords(logging.Handler):
    """What is logged while a command checks its options and inputs, before its log file exists: written into
    that file once the run starts (`start_run`), dropped if the command is refused (which leaves no log)."""

    LIMIT = 100_000

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lymphocytosis = True

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.LIMIT:
            self.records.append(record)


OUR_LOGGERS = {"lymphocytosis", "model", "tune", "extract", "root"}


class OtherLibrariesQuiet(logging.Filter):
    """On the terminal, other libraries (Optuna, LightGBM, ...) speak only to warn, unless -v; everything still
    reaches the run's log file."""

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or self.handler.level <= logging.DEBUG
                or record.name.split(".")[0] in OUR_LOGGERS)


def ours(handler: logging.Handler) -> bool:
    return getattr(handler, "_lymphocytosis", False)


def setup_logging(level: int = logging.INFO) -> None:
    """The terminal handler at `level`; everything reaches the root logger (for the run's log file), except the
    DEBUG chatter of libraries that have nothing to say to a user of this tool."""
    root = logging.getLogger()
    if not any(ours(h) and type(h) is logging.StreamHandler for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(MaskingFormatter(TERMINAL_FORMAT))
        handler._lymphocytosis = True
        handler.addFilter(OtherLibrariesQuiet(handler))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for handler in root.handlers:
        if ours(handler) and type(handler) is logging.StreamHandler:
            handler.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def set_verbosity(args: argparse.Namespace) -> None:
    """-v: debugging messages too; -q: warnings and errors only, no progress bars."""
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    progress.QUIET = bool(quiet)


def route_optuna_logging() -> None:
    """Optuna's messages in the tool's format and log file, not in Optuna's own `[I ...]` style."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


def run_settings(args: argparse.Namespace) -> dict:
    hidden = {"config", "verbose", "quiet", "command"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in hidden and not k.startswith("_") and v is not None}


def start_run(args: argparse.Namespace, command: str, home: Path) -> Path:
    """Record this run beside its outputs, once its options are checked (a refused command leaves nothing):
    `<home>/logs/<command>-<time>.log` (everything logged, at debug level, from the start) and `.toml` (the
    resolved settings; usable again with --config)."""
    global RUN_LOG
    logs = ArtifactPaths(Path(home)).logs
    now = dt.datetime.now()
    base = logs / f"{command}-{now.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    header = f"lymphocytosis {__version__}: {command}, {now.isoformat(timespec='seconds')}"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        atomic_write_text(base.with_suffix(".toml"), settings_toml(run_settings(args), command, header))
        handler = logging.FileHandler(base.with_suffix(".log"), encoding="utf-8")
    except (OSError, InputError) as exc:
        log.warning("cannot write this run's log in %s (%s); going on without it", logs,
                    getattr(exc, "strerror", None) or exc)
        return Path()
    handler.setFormatter(MaskingFormatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    handler._lymphocytosis = True
    root = logging.getLogger()
    for pending in [h for h in root.handlers if isinstance(h, PendingRecords)]:
        root.removeHandler(pending)
        for record in pending.records:
            handler.handle(record)
    root.addHandler(handler)
    RUN_LOG = base.with_suffix(".log")
    log.debug("command line: %s", " ".join(sys.argv))
    return RUN_LOG


def remove_run_handlers() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if ours(h) and isinstance(h, (logging.FileHandler, PendingRecords))]:
        root.removeHandler(handler)
        handler.close()


def cli_main(main):
    """Wrap a command's `main(argv)`: an `InputError` or OS error becomes `error: <message>` on stderr and exit
    code 2; Ctrl-C says that finished work is kept and exits 130; anything else is a bug: one line saying where
    the traceback was written, exit code 3. Passwords are masked in every line."""

    @functools.wraps(main)
    def wrapper(argv=None):
        global RUN_LOG
        RUN_LOG = None
        setup_logging()
        remove_run_handlers()
        logging.getLogger().addHandler(PendingRecords())
        try:
            return main(argv)
        except (InputError, OSError) as exc:  # an OS error's message names the path (full disk, unreadable file)
            print(masked(f"error: {exc}"), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
            return 130
        except Exception as exc:  # a bug, not the user's input: keep the details, say where
            logging.getLogger().debug("internal error", exc_info=True)  # into the run's log file, and with -v
            where = f"details in {RUN_LOG}" if RUN_LOG else "rerun with -v for details"
            print(masked(f"error: internal error ({type(exc).__name__}: {exc}); please report it; {where}"),
                  file=sys.stderr)
            return 3
        finally:
            remove_run_handlers()

    return wrapper
