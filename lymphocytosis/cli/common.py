"""What every command shares: one log format, and user errors as one line instead of a traceback."""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from ..errors import InputError


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def cli_main(main):
    """Wrap a command's `main(argv)`: an `InputError` or OS error becomes `error: <message>` on stderr and exit
    code 2; Ctrl-C says that finished work is kept and exits 130."""

    @functools.wraps(main)
    def wrapper(argv=None):
        setup_logging()
        try:
            return main(argv)
        except (InputError, OSError) as exc:  # an OS error's message names the path (full disk, unreadable file)
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
            return 130

    return wrapper


class Parser(argparse.ArgumentParser):
    """argparse whose errors are `InputError`s: one `error: ...` line and exit code 2, like every other refusal."""

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
