"""One exception type for problems the user can fix, so every command can print one line, not a traceback."""


class InputError(Exception):
    """Bad input or a refused operation; the message names the file, row, patient or setting at fault."""


def in_file(path, error: InputError) -> InputError:
    """The same error, naming the file it was found in (once)."""
    text = str(error)
    return error if text.startswith(str(path)) else InputError(f"{path}: {text}")


class InputErrors(InputError):
    """Several problems found at once (every bad value of a CSV): one `error:` line each when printed, since
    the command prints `error: ` before the message; with more than one, a last line counts them and says what
    happens."""

    def __init__(self, messages: list[str], consequence: str = ""):
        self.messages = list(messages)
        lines = list(self.messages)
        if len(lines) > 1:
            lines.append(f"{len(self.messages)} bad value{'s' if len(self.messages) != 1 else ''}"
                         f"{' ' + consequence if consequence else ''}")
        super().__init__("\nerror: ".join(lines))
