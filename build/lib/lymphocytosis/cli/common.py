"""What every command shares: options and help, a config file, one log format, a log file per run, the
artifacts layout, and user errors as one line instead of a traceback."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import re
import sys
import tomllib
from pathlib import Path

from .. import __version__, progress
from ..defaults import ARTIFACTS
from ..errors import InputError

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


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("every command")
    group.add_argument("-c", "--config", type=Path, default=None,
                       help="TOML file of settings (top-level keys for every command, a [extract], [cv], [fit], "
                            "[predict], [report] or [tune] table for one); options given here win; default: none")
    group.add_argument("-v", "--verbose", action="store_true", help="also show debugging messages")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    group.add_argument("--version", action="version", version=f"lymphocytosis {__version__}")


# --- the artifacts layout ------------------------------------------------------------------------------------------


def dataset_name(root: Path) -> str:
    return Path(root).resolve().name or "dataset"


def default_root() -> Path:
    return Path(os.environ.get("DATA", "data/synthetic"))


def default_embeddings() -> Path:
    """artifacts/<dataset>/embeddings.h5 of $DATA's dataset; else the only one extracted; else the synthetic one."""
    if os.environ.get("DATA"):
        return ARTIFACTS / dataset_name(Path(os.environ["DATA"])) / "embeddings.h5"
    found = sorted(ARTIFACTS.glob("*/embeddings.h5"))
    if len(found) > 1:
        raise InputError(f"several extractions in {ARTIFACTS}/ ({', '.join(str(p) for p in found)}): choose one with "
                         "--embeddings, or set DATA to its dataset")
    return found[0] if found else ARTIFACTS / "synthetic" / "embeddings.h5"


# --- config file ----------------------------------------------------------------------------------------------------


def read_config(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--config {path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {path}: not valid TOML ({exc})") from None


def config_arguments(path: Path, command: str, parser: argparse.ArgumentParser, given: list[str]) -> list[str]:
    """The config file's settings for `command` as command-line arguments, placed before the real ones so those
    win. Top-level keys apply wherever the command has the option; a [command] table's keys must exist."""
    document = read_config(path)
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    shared = {k: v for k, v in document.items() if not isinstance(v, dict)}
    own = document.get(command, {})
    arguments = []
    for key, value in [*shared.items(), *own.items()]:
        action = actions.get(key.replace("-", "_"))
        if action is None:
            if key in own:
                raise InputError(f"--config {path}: [{command}] has no setting {key!r}")
            continue
        option = action.option_strings[-1]
        if any(g == option or g.startswith(option + "=") for g in given):
            continue  # given on the command line: it wins (and lists are replaced, not extended)
        if isinstance(action, argparse._StoreTrueAction):
            arguments += [option] if value is True else []
        else:
            for item in value if isinstance(value, list) else [value]:
                arguments += [option, str(item)]
    return arguments


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None, command: str | None = None):
    """Parse `argv`; with --config, the file's settings go first and the command line on top. `command` names
    the config table to read; for a parser with subcommands (model.py) it is the subcommand given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("-c", "--config", type=Path)
    config = probe.parse_known_args(argv)[0].config
    if config is None:
        return parser.parse_args(argv)
    if command is not None:
        return parser.parse_args([*config_arguments(config, command, parser, argv), *argv])
    choices = parser._subparsers._group_actions[0].choices
    index = next((i for i, token in enumerate(argv) if token in choices), None)
    if index is None:
        return parser.parse_args(argv)  # argparse says that the subcommand is missing
    extra = config_arguments(config, argv[index], choices[argv[index]], argv)
    return parser.parse_args([*argv[: index + 1], *extra, *argv[index + 1:]])


# --- logging and the run's record -----------------------------------------------------------------------------------


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_lymphocytosis", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT))
        handler._lymphocytosis = True
        root.addHandler(handler)
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_lymphocytosis", False) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(level)


def route_optuna_logging() -> None:
    """Optuna's messages in the tool's format and log file, not in Optuna's own `[I ...]` style."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")


def without_passwords(text: str) -> str:
    """A database URL's password never reaches a log or settings file: user:***@host."""
    return URL_PASSWORD.sub(r"\1***@", text)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(without_passwords(str(value)))  # a JSON string is a valid TOML basic string


def start_run(args: argparse.Namespace, command: str, home: Path) -> Path:
    """Set verbosity, and record this run beside its outputs: `<home>/logs/<command>-<time>.log` (everything
    logged, at debug level) and `.toml` (the resolved settings; usable again with --config)."""
    global RUN_LOG
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    setup_logging(level)
    progress.QUIET = bool(args.quiet)
    logs = Path(home) / "logs"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        logs.mkdir(parents=True, exist_ok=True)
        base = logs / f"{command}-{stamp}-{os.getpid()}"
        settings = {k: v for k, v in sorted(vars(args).items())
                    if k not in {"config", "verbose", "quiet", "command"} and not k.startswith("_") and v is not None}
        lines = [f"# lymphocytosis {__version__}: {command}, {dt.datetime.now().isoformat(timespec='seconds')}",
                 f"[{command}]", *(f"{k.replace('_', '-')} = {toml_value(v)}" for k, v in settings.items())]
        base.with_suffix(".toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        handler = logging.FileHandler(base.with_suffix(".log"), encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write this run's log in %s (%s); going on without it", logs, exc.strerror or exc)
        return Path()
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    handler._lymphocytosis = True
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    RUN_LOG = base.with_suffix(".log")
    log.debug("command line: %s", without_passwords(" ".join(sys.argv)))
    return RUN_LOG


def cli_main(main):
    """Wrap a command's `main(argv)`: an `InputError` or OS error becomes `error: <message>` on stderr and exit
    code 2; Ctrl-C says that finished work is kept and exits 130; anything else is a bug: one line saying where
    the traceback was written, exit code 3."""

    @functools.wraps(main)
    def wrapper(argv=None):
        global RUN_LOG
        RUN_LOG = None
        setup_logging()
        try:
            return main(argv)
        except (InputError, OSError) as exc:  # an OS error's message names the path (full disk, unreadable file)
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
            return 130
        except Exception as exc:  # a bug, not the user's input: keep the details, say where
            logging.getLogger().debug("internal error", exc_info=True)  # into the run's log file, and with -v
            where = f"details in {RUN_LOG}" if RUN_LOG else "rerun with -v for details"
            print(f"error: internal error ({type(exc).__name__}: {exc}); please report it; {where}", file=sys.stderr)
            return 3
        finally:
            for handler in list(logging.getLogger().handlers):
                if isinstance(handler, logging.FileHandler) and getattr(handler, "_lymphocytosis", False):
                    logging.getLogger().removeHandler(handler)
                    handler.close()

    return wrapper
