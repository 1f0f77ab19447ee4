"""`lymphocytosis`: the installed command, one entry for the whole tool.

    lymphocytosis extract --root /data/dlmi    # = python extract.py ...
    lymphocytosis cv | fit | predict | report   # = python model.py cv ...
    lymphocytosis tune --trials 100             # = python tune.py ...
"""

from __future__ import annotations

import sys

from .. import __version__, invocation
from . import common

USAGE = f"""usage: lymphocytosis [--version] COMMAND [options]   (lymphocytosis {__version__})

Tumoral vs reactive lymphocytosis from a blood smear's cell images and age, sex and lymphocyte count.

commands:
  extract   embed every cell image of a dataset with a frozen network (once; on a GPU box if you have one)
  cv        repeated cross-validation: images + clinical vs clinical only; saves the results
  fit       train on every labelled patient and save the model
  predict   predict the patients without a label with a saved model
  report    HTML and Markdown report of the saved cross-validation
  tune      search the model's settings with Optuna (several workers may share one study)

`lymphocytosis COMMAND --help` lists a command's options and their defaults.
"""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"lymphocytosis {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in ("extract", "cv", "fit", "predict", "report", "tune"):
        print(f"error: lymphocytosis: unknown command {command!r} (extract, cv, fit, predict, report, tune)",
              file=sys.stderr)
        return 2
    common.CONSOLE = invocation.INSTALLED = True
    try:
        if command == "extract":
            from .extract import main as run
        elif command == "tune":
            from .tune import main as run
        else:
            from .model import main as run

            rest = [command, *rest]
        return run(rest)
    finally:
        common.CONSOLE = invocation.INSTALLED = False
