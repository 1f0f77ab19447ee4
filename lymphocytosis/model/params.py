"""LightGBM's parameters for ~150 patients: the defaults, and the rules every parameters file must follow.

LightGBM's own defaults (min_data_in_leaf=20, min_data_in_bin=3, 31 leaves) are for large data: with ~100
training patients they allow about 5 leaves in total. Here trees are small and regularised. Parameters come
from files people edit (tune.py's best_params.json, --params, model.json), so each is checked against an
explicit type and range before LightGBM sees it: a negative learning rate or `n_models: 0` is refused with
one line, not turned into an empty prediction.
"""

from __future__ import annotations

import math

from ..errors import InputError
from .json_values import is_number

DEFAULT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_iterations": 150,
    "num_leaves": 4,
    "max_depth": 3,
    "min_data_in_leaf": 8,
    "min_data_in_bin": 1,
    "min_sum_hessian_in_leaf": 1e-3,
    "max_bin": 63,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "n_models": 5,  # seed ensemble: average of 5 boosters with different bagging seeds (steadier than one)
}
FIXED_PARAMS = {"deterministic": True, "force_col_wise": True, "num_threads": 1, "verbosity": -1, "seed": 0}

# name: (type, lowest, highest); floats must also be finite. The ranges are generous but physical.
RULES = {
    "learning_rate": (float, 1e-6, 1.0),
    "num_iterations": (int, 1, 10_000),
    "num_leaves": (int, 2, 1024),
    "max_depth": (int, -1, 64),
    "min_data_in_leaf": (int, 1, 100_000),
    "min_data_in_bin": (int, 1, 100_000),
    "min_sum_hessian_in_leaf": (float, 0.0, 1e6),
    "max_bin": (int, 2, 1024),
    "feature_fraction": (float, 1e-6, 1.0),
    "bagging_fraction": (float, 1e-6, 1.0),
    "bagging_freq": (int, 0, 10_000),
    "lambda_l2": (float, 0.0, 1e6),
    "n_models": (int, 1, 100),
}


def shown(value) -> str:
    """A value for an error line: numbers too long to print (a 400-digit integer) shortened."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**16:
        exponent = math.log10(abs(value))  # exact enough for any size of integer, unlike float(value)
        mantissa = 10 ** (exponent - math.floor(exponent))
        return f"{'-' if value < 0 else ''}{mantissa:.3g}e+{math.floor(exponent)}"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_value(name: str, value, where: str):
    """The value as the rule's type, or one line naming `where`, the parameter and what is wrong. Booleans are
    no numbers here (True is an int to Python); NaN, infinities and integers too large for a float are out of
    range (compared exactly, never converted first)."""
    kind, low, high = RULES[name]
    if not is_number(value):
        raise InputError(f"{where}: parameter {name} = {shown(value)} is not {'an integer' if kind is int else 'a number'}")
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (finite and low <= value <= high) or (name == "max_depth" and value == 0):
        raise InputError(f"{where}: parameter {name} = {shown(value)} is out of range ({low} to {high})")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InputError(f"{where}: parameter {name} = {shown(value)} is not an integer")
    return kind(value)


def validate_params(params, where: str) -> dict:
    """The parameters, checked and completed with the defaults; `where` names the file they came from."""
    if not isinstance(params, dict):
        raise InputError(f"{where}: parameters must be an object of name: value, not {type(params).__name__}")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise InputError(f"{where}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(DEFAULT_PARAMS))})")
    if params.get("objective", "binary") != "binary":
        raise InputError(f"{where}: parameter objective = {params['objective']!r}; only 'binary' is supported")
    checked = {name: check_value(name, value, where) for name, value in params.items() if name != "objective"}
    return {**DEFAULT_PARAMS, **checked}


def too_few_patients(n_train: int, params: dict) -> str | None:
    """Why LightGBM cannot split with this many training patients, if it cannot."""
    leaf = int(params["min_data_in_leaf"])
    if n_train < 2 * leaf:
        return (f"{n_train} training patients with min_data_in_leaf {leaf}: no tree can split, so every patient would "
                "get the same probability; lower min_data_in_leaf (e.g. with a parameters file) or add patients")
    return None
