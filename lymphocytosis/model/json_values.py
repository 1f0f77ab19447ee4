"""Numbers and arrays read back from the JSON files this tool writes (model.json, cv.json), checked before use.

JSON gives whatever a hand edit or a damaged file put there: `true` where a number belongs (True is an int to
Python), a string, a bare number where a list belongs, nested lists of the wrong shape, 1e400 (read as
infinity), integers too large for a float. Each check raises one `InputError` naming the key (`what`); the
caller adds the file.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

SHAPE_NAMES = {1: "a list of numbers", 2: "a list of lists of numbers (a matrix)"}


def is_number(value) -> bool:
    """A JSON number: an int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def nested(value, depth: int) -> bool:
    """`depth` levels of non-empty lists with numbers at the bottom (ragged or not)."""
    if depth == 0:
        return is_number(value)
    return isinstance(value, list) and len(value) > 0 and all(nested(v, depth - 1) for v in value)


def described(value) -> str:
    if isinstance(value, list):
        try:
            return f"shape {np.shape(np.array(value, dtype=object))}"
        except ValueError:
            return "a ragged list"
    return type(value).__name__


def number_array(value, what: str, ndim: int) -> np.ndarray:
    """`value` as a float64 array of exactly `ndim` dimensions (none empty), every entry a finite number."""
    if not nested(value, ndim):
        raise InputError(f"{what} must be {SHAPE_NAMES[ndim]}, not {described(value)}")
    try:
        array = np.array(value, dtype=np.float64)
    except ValueError:
        raise InputError(f"{what} must be {SHAPE_NAMES[ndim]} of equal lengths (it is ragged)") from None
    except OverflowError:  # an integer beyond float range
        raise InputError(f"{what} holds a number out of range") from None
    if array.ndim != ndim:
        raise InputError(f"{what} must be {SHAPE_NAMES[ndim]}, not shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{what} holds a value that is not finite (NaN or infinite)")
    return array


def finite_number(value, what: str) -> float:
    if not is_number(value):
        raise InputError(f"{what} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value) or isinstance(value, int) and abs(value) > 1e300:
        raise InputError(f"{what} must be a finite number")
    return float(value)


def integer(value, what: str, low: int, high: int) -> int:
    """An integer from `low` to `high` (not a bool, not 5.0)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{what} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InputError(f"{what} must be from {low} to {high}")
    return value
