"""Options declared once, as data: the parser is built from them and a settings file is checked against them.

An `Options` table is a list of `Option`s, added as to argparse:

    CV.add("--folds", type=int_in(2, 100), default=5, help="folds of the stratified CV over patients")
    FIT.add("--all", action="store_true", help="...")

`add_options(parser, ...)` gives a parser the tables' options (in order: that is the order of --help), and
config.py reads a `--config` file with the same tables, so neither needs the other, nor argparse's internals.
Every option's help ends with its default, written here once (options whose default depends on others say it
in their help instead).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

ACTIONS = (None, "store_true", "append", "version")  # the argparse actions an option may have
SILENT_FLAGS = {"verbose", "quiet"}  # flags whose help says what they do, not that they are off


@dataclass(frozen=True)
class Option:
    """One command-line option: what `ArgumentParser.add_argument` takes, kept to be read again."""

    flags: tuple[str, ...]  # e.g. ("-c", "--config")
    help: str | None = None  # None: argparse's own (--version)
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # None (one value), "store_true" (a flag), "append" (a list), "version"
    metavar: str | None = None
    version: str | None = None
    group: str | None = None  # the --help section; None: the parser's own options
    nargs: str | None = None  # "+": several values after one flag (a list in a settings file)
    required: bool = False

    @property
    def dest(self) -> str:
        """The attribute of the parsed namespace, as argparse derives it (first long flag, `-` as `_`)."""
        long = next((flag for flag in self.flags if flag.startswith("--")), self.flags[0])
        return long.lstrip("-").replace("-", "_")

    @property
    def name(self) -> str:
        """The flag written when a setting becomes a command-line argument (the last: the long one)."""
        return self.flags[-1]

    @property
    def is_flag(self) -> bool:
        return self.action == "store_true"

    @property
    def is_list(self) -> bool:
        """Takes a list in a settings file: a repeatable flag, or several values after one flag."""
        return self.action == "append" or self.nargs == "+"

    def help_text(self) -> str | None:
        """The help with its default: `(default: off)` for a flag, none for a default of None (said in the help)."""
        if self.help is None:
            return None
        if self.is_flag and self.dest not in SILENT_FLAGS:
            return f"{self.help} (default: off)"
        if "%(default)" in self.help or self.default is None or self.default is False or self.action == "version":
            return self.help
        return f"{self.help} (default: %(default)s)"

    def add_to(self, container) -> None:
        """Add this option to an argparse parser or argument group."""
        keywords = {"type": self.type, "default": self.default, "choices": self.choices, "metavar": self.metavar,
                    "nargs": self.nargs}
        keywords = {key: value for key, value in keywords.items() if value is not None}
        if self.action is not None:
            keywords["action"] = self.action
        if self.action in ("store_true", "version"):
            keywords.pop("default", None)
            keywords.pop("type", None)
        if self.action == "version":
            keywords["version"] = self.version
        if self.required:
            keywords["required"] = True
        if self.help is not None:
            keywords["help"] = self.help_text()
        container.add_argument(*self.flags, **keywords)


class Options:
    """An ordered table of options: one command's own, or a part several commands share."""

    def __init__(self, group: str | None = None):
        self.group = group
        self.options: list[Option] = []

    def add(self, *flags: str, help: str | None = None, type: Callable[[str], Any] | None = None, default: Any = None,
            choices=None, action: str | None = None, metavar: str | None = None, version: str | None = None,
            nargs: str | None = None, required: bool = False) -> Option:
        """Declare an option, with `add_argument`'s keywords."""
        if action not in ACTIONS:
            raise ValueError(f"{flags[-1]}: action {action!r} is not one of {ACTIONS}")
        if nargs not in (None, "+"):
            raise ValueError(f"{flags[-1]}: nargs {nargs!r} is not None or '+'")
        option = Option(tuple(flags), help, type, default, tuple(choices) if choices is not None else None, action,
                        metavar, version, self.group, nargs, required)
        if any(other.dest == option.dest for other in self.options):
            raise ValueError(f"{option.name}: declared twice")
        self.options.append(option)
        return option

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options)


def add_options(parser: argparse.ArgumentParser, *tables: Options) -> argparse.ArgumentParser:
    """Give `parser` the tables' options, in order; options of a group go to that --help section."""
    groups = {}
    for table in tables:
        for option in table:
            if option.group is not None and option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            option.add_to(groups[option.group] if option.group is not None else parser)
    return parser


def options_of(*tables: Options) -> list[Option]:
    return [option for table in tables for option in table]


# --- value types: each turns a command-line string into a value or says why not -------------------------------------


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


def float_in(low: float, high: float, include_high: bool = True):
    """An argparse type: a finite number above `low` and up to `high` (or below it when not `include_high`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (low < value < high or include_high and value == high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected a number above {low} and "
                                             f"{'at most' if include_high else 'below'} {high}")
        return value

    parse.__name__ = "number"
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is out of range: expected a positive number")
    return value
