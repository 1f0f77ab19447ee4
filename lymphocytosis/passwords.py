"""A database password never reaches a log, a settings file, an error message or a saved file: the one masking
that every command, the run log and the tuning storage use (no heavy imports: the CLI's logging needs it).

`masked(text)` replaces the password of every `scheme://user:password@host` in `text` with `***`; given the
URL the password came from, it also replaces that password wherever it appears on its own, plain or
%-encoded (a driver's error message may quote it). Passwords seen once (`remember`) stay masked for the rest
of the process, whatever text they later turn up in.
"""

from __future__ import annotations

import re
import urllib.parse

# user:password@ after "://"; the password runs to the last "@" of the URL (a password with an unencoded "@" or
# "/" is hidden whole: masking too much is harmless, too little is not)
URL_PASSWORD = re.compile(r"(://[^:/@\s\"']*:)[^\s\"']*@")
MIN_REMEMBERED = 3  # shorter "passwords" would mask ordinary words of every message
_remembered: set[str] = set()


def url_password(url: str) -> str | None:
    """The password of `scheme://user:password@host...` (%-decoded), or None."""
    head, at, _ = str(url).rpartition("@")
    match = re.search(r"://[^:/@\s]*:(.*)$", head) if at else None
    return urllib.parse.unquote(match.group(1)) if match and match.group(1) else None


def remember(url: str) -> None:
    """Mask `url`'s password, plain and %-encoded, in every later `masked` text of this process."""
    password = url_password(url)
    if password and len(password) >= MIN_REMEMBERED:
        _remembered.update({password, urllib.parse.quote(password, safe=""), urllib.parse.quote(password)})


def masked(text: str, url: str | None = None) -> str:
    """`text` with every URL password replaced by *** (and `url`'s password, or one remembered, wherever it is)."""
    if url is not None:
        remember(url)
    text = str(text)
    for secret in sorted(_remembered, key=len, reverse=True):
        text = text.replace(secret, "***")
    return URL_PASSWORD.sub(r"\1***@", text)
