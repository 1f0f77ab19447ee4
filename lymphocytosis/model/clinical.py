"""Clinical attributes from the challenge CSVs, parsed strictly: every bad value names file, row, patient, column.

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

from ..contract.layout import read_patient_csv, read_split_tables, row_fingerprint
from ..contract.numbers import parse_decimal
from ..errors import InputError

REFERENCE_DATE = dt.date(2020, 1, 1)
CLINICAL_COLUMNS = ("ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT")
CLINICAL_FEATURES = ("age", "sex_male", "lymph_count", "log_lymph_count")
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


def _parse_row(row: pd.Series, where: str, split: str) -> dict:
    def bad(column, message):
        return InputError(f"{where}, patient {row['ID']}, column {column}: {message}")

    label = parse_label(row["LABEL"], split)
    if label is None:
        expected = "1 (tumoral) or 0 (reactive)" if split == "trainset" else "-1 or empty (unknown)"
        raise bad("LABEL", f"{row['LABEL']!r} in the {split}, where a label must be {expected}; a patient with a known "
                           "label belongs in the trainset, one without in the testset")
    gender = row["GENDER"].upper()
    if gender not in {"M", "F"}:
        raise bad("GENDER", f"{row['GENDER']!r} is not M or F")
    try:
        dob = parse_dob(row["DOB"])
    except ValueError as exc:
        raise bad("DOB", str(exc)) from None
    try:
        count = parse_decimal(row["LYMPH_COUNT"])
    except ValueError as exc:
        raise bad("LYMPH_COUNT", str(exc)) from None
    if not math.isfinite(count) or count <= 0:
        raise bad("LYMPH_COUNT", f"{row['LYMPH_COUNT']!r} must be a positive number")
    return {
        "ID": row["ID"],
        "label": label,
        "age": age_at_reference(dob),
        "sex_male": 1.0 if gender == "M" else 0.0,
        "lymph_count": count,
        "log_lymph_count": math.log(count),
        "row_sha256": row_fingerprint(row),
    }


def clinical_frame(csv_path: Path, split: str, table: pd.DataFrame) -> pd.DataFrame:
    """One split's parsed rows, indexed by patient ID."""
    records = [_parse_row(row, f"{csv_path} row {index}", split) for index, row in table.iterrows()]
    frame = pd.DataFrame.from_records(records, columns=["ID", "label", *CLINICAL_FEATURES, "row_sha256"])
    frame["split"] = split
    return frame.set_index("ID")


def read_clinical_csv(csv_path: Path, split: str) -> pd.DataFrame:
    """One split's CSV, read and parsed."""
    return clinical_frame(csv_path, split, read_patient_csv(csv_path, CLINICAL_COLUMNS))


def read_clinical(root: Path) -> pd.DataFrame:
    """Every patient of the dataset: label (-1 = unknown), split and the clinical features, indexed by ID."""
    tables = read_split_tables(root, CLINICAL_COLUMNS)
    return pd.concat([clinical_frame(csv_path, split, table) for split, (csv_path, table) in tables.items()])
