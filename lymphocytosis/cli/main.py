"""`lymphocytosis`: the installed command, one entry for the whole tool.

    lymphocytosis extract --root /data/dlmi    # = python extract.py ...
    lymphocytosis cv | fit | predict | report   # = python model.py cv ...
    lymphocytosis tune --trials 100             # = python tune.py ...
"""

from __future__ import annotations

import sys

from .. import __version__
from .catalog import COMMANDS, MODEL_COMMANDS

USAGE = f"""usage: lymphocytosis [--version] COMMAND [options]   (lymphocytosis {__version__})

Tumoral vs reactive lymphocytosis from a blood smear's cell images and age, sex and lymphocyte count.

commands:
  extract   embed every cell image of a dataset with a frozen network (once; on a GPU box if you have one)
  cv        repeated cross-validation: images + clinical vs clinical only; saves the results
  fit       train on every labelled patient and save the model
  predict   predict the patients without a label with a saved model
  report    HTML and Markdown report of the saved cross-validation
  evaluate  judge a saved model on another labelled cohort (BA, AUC, operating points, calibration)
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
    if command not in COMMANDS:
        print(f"error: lymphocytosis: unknown command {command!r} ({', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    if command == "extract":
        from .extract import main as run
    elif command == "tune":
        from .tune import main as run
    else:
        from .model import main as run
    return run([command, *rest] if command in MODEL_COMMANDS else rest, console=True)
