"""Settings files (`--config FILE.toml`): read strictly, and written back by every run (its resolved settings).

A file's values are defaults: they become command-line arguments placed before the real ones, so an option
given on the command line wins (and a list given there replaces the file's list). Top-level keys apply to
every command that has the option; a `[extract]`, `[cv]`, `[fit]`, `[predict]`, `[report]`, `[evaluate]` or `[tune]` table
to one command, over the top level. The whole file is checked against every command before anything runs,
and anything it cannot mean is one line naming the file and the key: an unknown key or table, a command name
given a value, a flag given something other than true/false, a list for a one-value option, a value the
option refuses (out of range, not a choice).
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from ..errors import InputError
from ..passwords import masked
from .catalog import COMMANDS, command_options
from .options import Option

NOT_SETTINGS = {"help", "version", "config"}  # options a settings file cannot give
HELP_FLAGS = ("-h", "--help")  # every parser's own


def settable(command: str) -> dict[str, Option]:
    """The options a settings file may give a command, by destination (`cv-dir` and `cv_dir` both name `cv_dir`)."""
    return {o.dest: o for o in command_options(command) if o.dest not in NOT_SETTINGS}


def read_config(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--config {path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise InputError(f"--config {path}: cannot read ({exc.strerror or exc})") from None


def dest(key: str) -> str:
    return key.replace("-", "_")


def option_values(path: Path, label: str, value, option: Option) -> list[str]:
    """A setting's value as the option's command-line values, after the checks the option's parser makes."""
    where = f"--config {path}: {label} = {toml_value(value)}"
    name = option.name
    if option.is_flag:
        if not isinstance(value, bool):
            raise InputError(f"{where}: {name} is a flag, true or false")
        return ["true"] if value else []
    if isinstance(value, list) and not option.is_list:
        raise InputError(f"{where}: a list, but {name} takes one value")
    texts = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise InputError(f"{where}: {name} takes a {'string' if option.type in (None, Path) else 'number'}, "
                             f"not {type(item).__name__}")
        text = str(item)
        if "\0" in text:  # no path or value holds one; the OS would refuse it later, as a traceback
            raise InputError(f"--config {path}: {label}: holds a NUL character (\\0), which no path or value may contain")
        try:
            converted = option.type(text) if option.type is not None else text
        except argparse.ArgumentTypeError as exc:
            raise InputError(f"{where}: {exc}") from None
        except (TypeError, ValueError):
            raise InputError(f"{where}: not a valid {getattr(option.type, '__name__', 'value')} for {name}") from None
        if option.choices is not None and converted not in option.choices:
            raise InputError(f"{where}: {name} is one of {', '.join(map(str, option.choices))}")
        texts.append(text)
    return texts


def check_layout(path: Path, document: dict) -> None:
    """Tables must be commands, top-level keys options of some command (and not a command's name)."""
    for key, value in document.items():
        if isinstance(value, dict):
            if key not in COMMANDS:
                raise InputError(f"--config {path}: unknown table [{key}] (the tables are "
                                 f"{', '.join(f'[{c}]' for c in COMMANDS)})")
        elif key in COMMANDS:
            raise InputError(f"--config {path}: {key} = {toml_value(value)}: {key} is a command; its settings go in a "
                             f"[{key}] table")
    known = sorted({d for command in COMMANDS for d in settable(command)})
    for key, value in document.items():
        if not isinstance(value, dict) and dest(key) not in known:
            raise InputError(f"--config {path}: unknown setting {key!r} (the settings are "
                             f"{', '.join(k.replace('_', '-') for k in known)})")


def scope(path: Path, table: str | None, items: dict, options: dict) -> dict[str, tuple[str, object]]:
    """One table's (or the top level's) settings that `options` has, by destination; the same option named
    twice (`cv-dir` and `cv_dir`) is refused."""
    chosen = {}
    for key, value in items.items():
        if isinstance(value, dict) or dest(key) not in options:
            continue
        label = f"[{table}] {key}" if table else key
        if dest(key) in chosen:
            raise InputError(f"--config {path}: {label} and {chosen[dest(key)][0]} are the same setting; give it once")
        chosen[dest(key)] = (label, value)
    return chosen


def config_settings(path: Path, document: dict) -> dict[str, dict[str, list[str]]]:
    """The whole file checked against every command: per command, each setting's command-line values, by
    destination (a command's table over the top level)."""
    check_layout(path, document)
    settings = {}
    for command in COMMANDS:
        options = settable(command)
        table = document.get(command, {})
        for key, value in table.items():
            if dest(key) not in options:
                raise InputError(f"--config {path}: [{command}] has no setting {key!r} (its settings are "
                                 f"{', '.join(k.replace('_', '-') for k in sorted(options))})")
            if isinstance(value, dict):
                raise InputError(f"--config {path}: [{command}.{key}] is a table; {key} takes a value")
        chosen = {**scope(path, None, document, options), **scope(path, command, table, options)}
        settings[command] = {d: option_values(path, label, value, options[d]) for d, (label, value) in chosen.items()}
    return settings


def given_options(command: str, argv: list[str]) -> set[str]:
    """Destinations of the options `argv` gives the command (by name, `--name=value`, or an abbreviation argparse
    accepts)."""
    exact = dict.fromkeys(HELP_FLAGS, "help")
    exact |= {flag: option.dest for option in command_options(command) for flag in option.flags}
    given = set()
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if name in exact:
            given.add(exact[name])
        elif name.startswith("--") and len(name) > 2:
            matches = {d for flag, d in exact.items() if flag.startswith(name)}
            given |= matches if len(matches) == 1 else set()
    return given


def config_arguments(path: Path, command: str, given: list[str]) -> list[str]:
    """The config file's settings for `command` as command-line arguments, to be placed before the real ones
    (`given`) so those win; an option the command line gives is left out (a list there replaces the file's)."""
    settings = config_settings(path, read_config(path))[command]
    options, on_command_line = settable(command), given_options(command, given)
    arguments = []
    for destination, values in settings.items():
        if destination in on_command_line:
            continue
        option = options[destination]
        if option.is_flag:
            arguments += [option.name] if values else []
        elif option.nargs == "+":  # several values after one flag (numbers: none starts with "-")
            arguments += [option.name, *values]
        else:
            arguments += [f"{option.name}={value}" for value in values]  # `=`: a value may start with "-"
    return arguments


# --- writing settings back ------------------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string: non-ASCII as it is, quotes, backslashes and control characters escaped."""
    escaped = json.dumps(text, ensure_ascii=False)  # escapes ", \ and U+0000-U+001F as TOML does
    return escaped.replace("\x7f", "\\u007f")  # DEL: JSON leaves it, TOML does not allow it unescaped


def toml_value(value) -> str:
    """A setting as TOML; a URL's password is masked."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return toml_string(masked(str(value)))


def representable(value) -> bool:
    """False for text TOML cannot hold (a file name that is not UTF-8 comes from the OS as lone surrogates)."""
    if isinstance(value, (list, tuple)):
        return all(representable(v) for v in value)
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def settings_toml(settings: dict, command: str, header: str) -> str:
    """The resolved settings of a run as a `[command]` table that `--config` reads back."""
    lines = [f"# {header}", f"[{command}]"]
    for key, value in settings.items():
        name = key.replace("_", "-")
        if representable(value):
            lines.append(f"{name} = {toml_value(value)}")
        else:
            lines.append(f"# {name}: not representable in TOML (a path that is not valid UTF-8)")
    return "\n".join(lines) + "\n"
