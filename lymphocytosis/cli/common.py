"""What every command shares: the run's state, options and help, a config file, one log format, a log file per
run, the artifacts layout, and user errors as one line instead of a traceback."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..defaults import ARTIFACTS, ArtifactPaths, artifact_paths, extraction_path
from ..errors import InputError
from ..files import atomic_write_text
from ..invocation import as_started, command
from ..passwords import masked
from ..progress import Progress
from .config import config_arguments, settings_toml

log = logging.getLogger("lymphocytosis")
TERMINAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class Run:
    """One run of a command, made by `cli_main` and handed down: how it was started, how much it says, and its
    record (where its log goes, and the log file once the run starts)."""

    console: bool = False  # run as the installed `lymphocytosis` command (not extract.py, model.py, tune.py)
    quiet: bool = False  # -q: warnings and errors only, no progress bars
    verbose: bool = False  # -v: debugging messages too
    home: Path | None = None  # the artifacts folder this run's log goes to (`<home>/logs/`)
    log_file: Path | None = None  # this run's log, named in the message of an unexpected error
    arguments: tuple[str, ...] = ()  # what followed the program's name on the command line

    def command_line(self, script: str) -> str:
        """The command as the user would type it again (model card, evaluation results)."""
        program = ["lymphocytosis"] if self.console else ["python", script]
        return shlex.join([*program, *self.arguments])

    @property
    def progress(self) -> Progress:
        """How the long steps this run starts show their progress."""
        return Progress(quiet=self.quiet)

    def program(self, script: str, command: str = "") -> str:
        """The name a command's help and errors use: `extract.py` as a script, `lymphocytosis extract` installed."""
        return " ".join(filter(None, ("lymphocytosis", command))) if self.console else script

    def words(self, text: str) -> str:
        """A message or help text with its command lines (written `python model.py fit` in the library) as this
        run's user types them (invocation.as_started)."""
        return as_started(text, self.console)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are `InputError`s: one `error: ...` line and exit code 2, like every other refusal.
    Help keeps the description's line breaks; each option's help already ends with its default (options.py)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def changed_options(parser: argparse.ArgumentParser, args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The options among `names` given another value than their default, as written on the command line: those
    that mean nothing for the chosen mode are refused, not silently ignored."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != parser.get_default(name)]


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


def resolve_data_options(args: argparse.Namespace, run: Run) -> ArtifactPaths:
    """Fill the defaults of the stage-2 inputs (catalog.data_options); the artifacts layout of the (first)
    embeddings file, which is also where this run's log goes (`run.home`). A folder given to --embeddings means
    its embeddings.h5."""
    args.embeddings = [Path(p) / "embeddings.h5" if Path(p).is_dir() else p for p in args.embeddings or []]
    args.embeddings = args.embeddings or [default_embeddings()]
    args.measurements = args.measurements or []
    paths = artifact_paths(args.embeddings[0])
    run.home = paths.home
    return paths


def cohort_inputs(cohort) -> list[Path]:
    """The files a stage-2 run reads for its cohort (embeddings, measurements, the dataset's CSVs): no output may be
    one of them."""
    from ..contract.layout import split_csv_paths
    from ..contract.store import views_path

    views = [path for path in (views_path(s.path) for s in cohort.sets) if path.exists()]  # read or not, never replaced
    return [s.path for s in cohort.sets] + views + list(split_csv_paths(cohort.dataset_root).values())


# --- config file (see config.py) -----------------------------------------------------------------------------------


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None, run: Run, command: str | None = None,
                      subcommands: tuple[str, ...] = ()):
    """Parse `argv`; with --config, the file's settings go first and the command line on top. `command` names
    the config table to read; for a parser with `subcommands` (model.py) it is the subcommand given. The run's
    verbosity (-v, -q) applies from here on."""
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = Parser(prog=parser.prog, add_help=False)
    probe.add_argument("-c", "--config", type=Path)
    config = probe.parse_known_args(argv)[0].config
    if config is None:
        args = parser.parse_args(argv)
    elif command is not None:
        args = parser.parse_args([*config_arguments(config, command, argv), *argv])
    else:
        index = next((i for i, token in enumerate(argv) if token in subcommands), None)
        if index is None:
            return parser.parse_args(argv)  # argparse says that the subcommand is missing
        extra = config_arguments(config, argv[index], argv)
        args = parser.parse_args([*argv[: index + 1], *extra, *argv[index + 1:]])
    set_verbosity(args, run)
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


def set_verbosity(args: argparse.Namespace, run: Run) -> None:
    """-v: debugging messages too; -q: warnings and errors only, no progress bars."""
    run.verbose, run.quiet = bool(getattr(args, "verbose", False)), bool(getattr(args, "quiet", False))
    setup_logging(logging.DEBUG if run.verbose else logging.WARNING if run.quiet else logging.INFO)


def route_optuna_logging() -> None:
    """Optuna's messages in the tool's format and log file, not in Optuna's own `[I ...]` style."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


def run_settings(args: argparse.Namespace) -> dict:
    hidden = {"config", "verbose", "quiet", "command"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in hidden and not k.startswith("_") and v is not None}


def start_run(args: argparse.Namespace, run: Run, command: str) -> Path:
    """Record this run beside its outputs (`run.home`), once its options are checked (a refused command leaves
    nothing): `<home>/logs/<command>-<time>.log` (everything logged, at debug level, from the start) and `.toml`
    (the resolved settings; usable again with --config)."""
    logs = ArtifactPaths(Path(run.home)).logs
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
    run.log_file = base.with_suffix(".log")
    log.debug("command line: %s", " ".join(sys.argv))
    return run.log_file


def remove_run_handlers() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if ours(h) and isinstance(h, (logging.FileHandler, PendingRecords))]:
        root.removeHandler(handler)
        handler.close()


class AsStarted(logging.Filter):
    """On the terminal of a run of the installed command, log lines name commands as that user types them
    (`lymphocytosis fit`, not `python model.py fit`); installed by `cli_main` for the run and removed after. (A record
    shown on the terminal is rewritten in place, so the run's log file has that line as the terminal showed it;
    debug lines the terminal does not show keep the canonical form.)"""

    def __init__(self, console: bool):
        super().__init__()
        self.console = console

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        rewritten = as_started(message, self.console)
        if rewritten != message:
            record.msg, record.args = rewritten, ()
        return True


def terminal_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if ours(h) and type(h) is logging.StreamHandler]


def cli_main(main):
    """Wrap a command's `main(argv, run)` into `main(argv, console=False)`, which makes the run's state (`Run`) and
    hands it down: an `InputError` or OS error becomes `error: <message>` on stderr and exit code 2; Ctrl-C says
    that finished work is kept and exits 130; anything else is a bug: one line saying where the traceback was
    written, exit code 3. Passwords are masked in every line, and commands named as the user started the tool."""

    @functools.wraps(main)
    def wrapper(argv=None, console: bool = False):
        run = Run(console=console, arguments=tuple(sys.argv[1:] if argv is None else argv))
        setup_logging()
        remove_run_handlers()
        logging.getLogger().addHandler(PendingRecords())
        words = AsStarted(console)
        for handler in terminal_handlers():
            handler.addFilter(words)
        try:
            return main(argv, run)
        except (InputError, OSError) as exc:  # an OS error's message names the path (full disk, unreadable file)
            print(masked(run.words(f"error: {exc}")), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
            return 130
        except Exception as exc:  # a bug, not the user's input: keep the details, say where
            logging.getLogger().debug("internal error", exc_info=True)  # into the run's log file, and with -v
            where = f"details in {run.log_file}" if run.log_file else "rerun with -v for details"
            print(masked(f"error: internal error ({type(exc).__name__}: {exc}); please report it; {where}"),
                  file=sys.stderr)
            return 3
        finally:
            for handler in terminal_handlers():
                handler.removeFilter(words)
            remove_run_handlers()

    return wrapper
