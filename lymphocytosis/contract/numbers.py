"""The one reading of a number in a CSV: plain decimal notation and nothing else.

Python's `float()` also takes `12_11` (as 1211.0), fullwidth or other Unicode digits, `inf`, `nan` and
surrounding blanks: each is a plausible typo or encoding accident that would silently become a wrong value.
Here a number is ASCII digits with one optional sign, at most one decimal point and an optional exponent.
"""

from __future__ import annotations

import re

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def parse_decimal(text: str) -> float:
    """The value of `text`; ValueError (saying what a number may look like) for anything else."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal number (ASCII digits, an optional sign, one decimal point, an "
                         "optional exponent)")
    return float(text)
