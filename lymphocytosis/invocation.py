"""Command names in messages: library code writes every command one canonical way, as the scripts run it
(`python model.py fit`, `python extract.py`); the command-line boundary (cli/common.py `cli_main`, the parsers'
help) rewrites them with `as_started` for a user who started the installed `lymphocytosis` command. No state:
how the tool was started belongs to the run (cli/common.py `Run.console`), not to this module."""

from __future__ import annotations

SCRIPTS = {"extract": "extract.py", "tune": "tune.py", "cv": "model.py cv", "fit": "model.py fit",
           "predict": "model.py predict", "report": "model.py report", "evaluate": "model.py evaluate"}

# script form -> installed form, longest first so that `python model.py ` is rewritten before `model.py `
_REWRITES = (("python model.py ", "lymphocytosis "), ("model.py ", "lymphocytosis "),
             ("python extract.py", "lymphocytosis extract"), ("extract.py", "lymphocytosis extract"),
             ("python tune.py", "lymphocytosis tune"), ("tune.py", "lymphocytosis tune"))


def command(name: str) -> str:
    """The canonical command line that runs `name` (extract, cv, fit, predict, report, evaluate, tune)."""
    return f"python {SCRIPTS[name]}"


def as_started(text: str, console: bool) -> str:
    """`text` (a message, a help text) with its command lines written the way the user started the tool: unchanged
    for the scripts, `lymphocytosis ...` for the installed command (`console`)."""
    if not console:
        return text
    for script, installed in _REWRITES:
        text = text.replace(script, installed)
    return text
