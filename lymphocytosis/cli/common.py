"""What every command shares: one log format, and user errors as one line instead of a traceback."""

from __future__ import annotations

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
