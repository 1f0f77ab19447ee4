"""A database password never reaches a log, a settings file, an error message or a saved file: the one masking
that every command, the run log and the tuning storage use (no heavy imports: the CLI's logging needs it).

`masked(text)` replaces the password of every `scheme://user:password@host` in `text` with `***`, and the
value of every credential parameter (`password=`, `sslpassword=`, `token=`, `secret=`, `api_key=`, ... in a
URL's query string or a libpq `key=value` string); given the URL a secret came from, it also replaces that
secret wherever it appears on its own, plain or %-encoded (a driver's error message may quote it). Secrets
seen once (`remember`) stay masked for the rest of the process, whatever text they later turn up in.
"""

from __future__ import annotations

import re
import urllib.parse

# user:password@ after "://"; the password runs to the last "@" of the URL (a password with an unencoded "@" or
# "/" is hidden whole: masking too much is harmless, too little is not)
URL_PASSWORD = re.compile(r"(://[^:/@\s\"']*:)[^\s\"']*@")
# credential parameters: their values are secrets wherever they appear (`?password=...`, `&token=...`, `password=...`)
CREDENTIAL_NAMES = (r"(?:ssl)?pass(?:word|wd)?|pwd|secret(?:[_-]?key)?|(?:auth|access|refresh|id)?[_-]?token"
                    r"|api[_-]?key|access[_-]?key(?:[_-]?id)?|private[_-]?key|credentials?|client[_-]?secret|sas|sig")
CREDENTIAL_PARAMETER = re.compile(rf"(?i)(?<![A-Za-z0-9_])((?:{CREDENTIAL_NAMES})=)[^&\s\"';#]*")
MIN_REMEMBERED = 3  # shorter "passwords" would mask ordinary words of every message
_remembered: set[str] = set()


def url_password(url: str) -> str | None:
    """The password of `scheme://user:password@host...` (%-decoded), or None."""
    head, at, _ = str(url).rpartition("@")
    match = re.search(r"://[^:/@\s]*:(.*)$", head) if at else None
    return urllib.parse.unquote(match.group(1)) if match and match.group(1) else None


def url_secrets(url: str) -> list[str]:
    """Every secret of a URL: its userinfo password and the values of its credential parameters (%-decoded)."""
    secrets = [url_password(url)]
    for match in CREDENTIAL_PARAMETER.finditer(str(url)):
        secrets.append(urllib.parse.unquote_plus(str(url)[match.end(1):match.end()]))
    return [s for s in secrets if s]


def remember(url: str) -> None:
    """Mask `url`'s secrets, plain and %-encoded, in every later `masked` text of this process."""
    for secret in url_secrets(url):
        if len(secret) >= MIN_REMEMBERED:
            _remembered.update({secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret),
                                urllib.parse.quote_plus(secret)})


def masked(text: str, url: str | None = None) -> str:
    """`text` with every URL password replaced by *** (and `url`'s password, or one remembered, wherever it is)."""
    if url is not None:
        remember(url)
    text = str(text)
    for secret in sorted(_remembered, key=len, reverse=True):
        text = text.replace(secret, "***")
    return CREDENTIAL_PARAMETER.sub(r"\1***", URL_PASSWORD.sub(r"\1***@", text))
