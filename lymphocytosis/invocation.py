"""How the user started the tool, so that every message names a command they can type: `lymphocytosis fit` for
those who installed the command, `python model.py fit` for those who run the scripts. Set by the `lymphocytosis`
entry point (cli/main.py); library code asks `command()` instead of writing either form."""

INSTALLED = False  # True while the installed `lymphocytosis` command runs

SCRIPTS = {"extract": "extract.py", "tune": "tune.py", "cv": "model.py cv", "fit": "model.py fit",
           "predict": "model.py predict", "report": "model.py report"}


def command(name: str) -> str:
    """The command line that runs `name` (extract, cv, fit, predict, report, tune), as the user started the tool."""
    return f"lymphocytosis {name}" if INSTALLED else f"python {SCRIPTS[name]}"


def as_started(text: str) -> str:
    """A help text's example command lines written the way the user started the tool."""
    if not INSTALLED:
        return text
    for script, name in (("python model.py ", ""), ("model.py ", ""), ("python extract.py", "extract"),
                         ("extract.py", "extract"), ("python tune.py", "tune"), ("tune.py", "tune")):
        text = text.replace(script, f"lymphocytosis {name}".rstrip() + (" " if not name else ""))
    return text
