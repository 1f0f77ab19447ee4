"""One exception type for problems the user can fix, so every command can print one line, not a traceback."""


class InputError(Exception):
    """Bad input or a refused operation; the message names the file, row, patient or setting at fault."""


def in_file(path, error: InputError) -> InputError:
    """The same error, naming the file it was found in (once)."""
    text = str(error)
    return error if text.startswith(str(path)) else InputError(f"{path}: {text}")
