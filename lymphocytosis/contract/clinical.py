"""The rules a challenge CSV row must follow, shared by both stages: `extract` checks every row with them before
embedding anything (a typo costs seconds, not an hour of embedding), and stage 2 parses the rows with them.

Quirks of the real files handled here: DOB as M/D/YYYY (11/3/1933) and as DD-MM-YYYY (28-04-1943);
GENDER M/F in any case; LYMPH_COUNT (10^9 cells/L) very skewed, hence also its log.
Age is computed at REFERENCE_DATE, a fixed date near the data's collection (the challenge dates from
2021), so an age never depends on the day the tool runs.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import pandas as pd

from ..errors import InputError, InputErrors
from .layout import ROW_COLUMNS, read_split_tables, row_fingerprint
from .numbers import parse_decimal

REFERENCE_DATE = dt.date(2020, 1, 1)
CLINICAL_COLUMNS = ROW_COLUMNS
_SLASH = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$", re.ASCII)  # M/D/YYYY; ASCII digits only, as every number
_DASH = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{4})$", re.ASCII)  # DD-MM-YYYY
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$", re.ASCII)  # YYYY-MM-DD


def parse_dob(text: str) -> dt.date:
    """A date of birth in one of the formats the challenge files use; ValueError otherwise."""
    for pattern, order in ((_SLASH, "mdy"), (_DASH, "dmy"), (_ISO, "ymd")):
        match = pattern.match(text)
        if match:
            parts = dict(zip(order, map(int, match.groups())))
            date = dt.date(parts["y"], parts["m"], parts["d"])  # raises ValueError on 31/02 etc.
            if not dt.date(1880, 1, 1) <= date <= REFERENCE_DATE:
                raise ValueError(f"{text!r} is outside 1880..{REFERENCE_DATE}")
            return date
    raise ValueError(f"{text!r} is not M/D/YYYY, DD-MM-YYYY or YYYY-MM-DD")


def age_at_reference(dob: dt.date) -> float:
    return (REFERENCE_DATE - dob).days / 365.25


def parse_label(text: str, split: str) -> int | None:
    """The label a row of `split` may carry: 0/1 in the trainset, -1 or empty (unknown) in the testset.
    None when the value is not allowed there."""
    allowed = {"0": 0, "1": 1, "0.0": 0, "1.0": 1} if split == "trainset" else {"-1": -1, "-1.0": -1, "": -1}
    return allowed.get(text)


def _label(text: str, split: str) -> int:
    label = parse_label(text, split)
    if label is None:
        expected = "1 (tumoral) or 0 (reactive)" if split == "trainset" else "-1 or empty (unknown)"
        raise ValueError(f"{text!r} in the {split}, where a label must be {expected}; a patient with a known label "
                         "belongs in the trainset, one without in the testset")
    return label


def _sex_male(text: str) -> float:
    gender = text.upper()
    if gender not in {"M", "F"}:
        raise ValueError(f"{text!r} is not M or F")
    return 1.0 if gender == "M" else 0.0


def _count(text: str) -> float:
    count = parse_decimal(text)  # the one strict reading of a CSV number (numbers.py)
    if not math.isfinite(count) or count <= 0:
        raise ValueError(f"{text!r} must be a positive number")
    return count


def parse_row(row: pd.Series, where: str, split: str) -> tuple[dict | None, list[str]]:
    """A row's clinical values, or None with one message per bad column (every column checked, not the first)."""
    values, problems = {}, []
    for column, key, parse in (("LABEL", "label", lambda t: _label(t, split)), ("GENDER", "sex_male", _sex_male),
                               ("DOB", "age", lambda t: age_at_reference(parse_dob(t))), ("LYMPH_COUNT", "lymph_count", _count)):
        try:
            values[key] = parse(row[column])
        except ValueError as exc:
            problems.append(f"{where}, patient {row['ID']}, column {column}: {exc}")
    if problems:
        return None, problems
    return {"ID": row["ID"], **values, "log_lymph_count": math.log(values["lymph_count"]),
            "row_sha256": row_fingerprint(row)}, []


def parse_table(csv_path: Path, split: str, table: pd.DataFrame) -> list[dict]:
    """Every row of one split's table, parsed; InputErrors listing every bad value of the file otherwise."""
    records, problems = [], []
    for index, row in table.iterrows():
        record, found = parse_row(row, f"{csv_path} row {index}", split)
        problems += found
        if record is not None:
            records.append(record)
    if problems:
        raise InputErrors(problems)
    return records


def check_clinical_csvs(root: Path) -> dict[str, tuple[Path, pd.DataFrame]]:
    """Every row of every split against the rules stage 2 applies: one InputErrors listing every bad value of
    both CSVs (one line each); else the tables read (read_split_tables), for the caller not to read them again."""
    problems = []
    tables = read_split_tables(root, CLINICAL_COLUMNS)
    for split, (csv_path, table) in tables.items():
        try:
            parse_table(csv_path, split, table)
        except InputErrors as exc:
            problems += exc.messages
    if problems:
        raise InputErrors(problems, "in the CSVs; nothing was embedded: correct them and rerun")
    return tables


__all__ = ["CLINICAL_COLUMNS", "REFERENCE_DATE", "InputError", "age_at_reference", "check_clinical_csvs", "parse_dob",
           "parse_label", "parse_row", "parse_table"]
