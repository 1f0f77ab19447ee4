"""One exception type for problems the user can fix, so every CLI can print one line, not a traceback."""

import functools
import logging
import sys


class InputError(Exception):
    """Bad input or a refused operation; the message names the file, row, patient or setting at fault."""


def cli_main(main):
    """Wrap a CLI entry point: an `InputError` becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        try:
            return main(argv)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # unwritable output, full disk, unreadable file: the OS message names the path
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
            return 130

    return wrapper
