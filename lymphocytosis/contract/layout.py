"""Where patients and their cell images live in the DLMI challenge layout.

    ROOT/trainset/trainset_true.csv  ROOT/trainset/<ID>/*.jpg
    ROOT/testset/testset_data.csv    ROOT/testset/<ID>/*.jpg   (LABEL -1 = unknown)

Patients come from the CSVs, never from the folders, so a folder without a CSV row is not a patient and a
CSV row without a folder is a patient with 0 cells. IDs become folder and HDF5 names, hence validated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import InputError

SPLIT_CSVS = {"trainset": "trainset_true.csv", "testset": "testset_data.csv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PatientEntry:
    """A patient as listed in a split's CSV; `row` is the 1-based line in that file (header = line 1)."""

    patient_id: str
    split: str
    folder: Path
    csv_path: Path
    row: int
    row_sha256: str = ""  # the CSV row's fingerprint (see row_fingerprint)


ROW_COLUMNS = ("ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT")  # the columns the tool reads (contract/clinical.py)


def row_fingerprint(row: pd.Series) -> str:
    """SHA-256 of a CSV row's values by column name, over the columns the tool reads: recorded at extraction, so
    stage 2 can refuse clinical values that are not the ones the embeddings were made beside (another dataset, an
    edited CSV), while a column added for one's own notes changes nothing. (For a CSV of exactly these columns,
    the same digest as when every column counted.)"""
    values = {str(column): str(value) for column, value in row.items() if str(column) in ROW_COLUMNS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def validate_patient_id(patient_id: str, where: str) -> str:
    """Refuse IDs that could escape their folder or clash in HDF5: separators, `..`, empty, odd characters."""
    if not patient_id or patient_id in {".", ".."} or ".." in patient_id or not _ID_PATTERN.match(patient_id):
        raise InputError(
            f"{where}: invalid patient ID {patient_id!r} (letters, digits, '_', '-', '.' only; no path separators or '..')"
        )
    return patient_id


def read_patient_csv(csv_path: Path, required_columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a challenge CSV as strings (values are parsed later, with row numbers in the errors)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: CSV file not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(f"{csv_path}: not a readable CSV (empty file; expected a header line)")
    header, body = [cell.strip().upper() for cell in rows[0]], []
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated or "" in header:
        problem = f"column {repeated[0]} appears more than once" if repeated else "a column has no name"
        raise InputError(f"{csv_path}: header line: {problem} ({', '.join(header)})")
    missing = [c for c in required_columns if c not in header]
    if missing:
        raise InputError(f"{csv_path}: missing column(s) {', '.join(missing)} (found: {', '.join(header)})")
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines carry no patient
        if len(row) != len(header):
            who = f", patient {row[header.index('ID')].strip()}" if "ID" in header and header.index("ID") < len(row) else ""
            raise InputError(f"{csv_path} row {line_number}{who}: {len(row)} fields, the header has {len(header)}")
        body.append((line_number, row))
    table = pd.DataFrame([row for _, row in body], columns=header, index=[n for n, _ in body], dtype=str)
    table = table.apply(lambda col: col.str.strip())
    table.index.name = "row"
    for row, patient_id in table["ID"].items():
        validate_patient_id(patient_id, f"{csv_path} row {row}")
    duplicated = table["ID"][table["ID"].duplicated()]
    if len(duplicated):
        row = duplicated.index[0]
        raise InputError(f"{csv_path} row {row}: patient {duplicated.iloc[0]} appears more than once")
    return table


def split_csv_paths(root: Path) -> dict[str, Path]:
    """The CSV of each split present under `root`; a split folder without its CSV is an error."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset root not found (expected trainset/ and testset/ in the challenge layout)")
    found = {}
    for split, csv_name in SPLIT_CSVS.items():
        csv_path = root / split / csv_name
        if csv_path.is_file():
            found[split] = csv_path
        elif (root / split).exists():
            raise InputError(f"{csv_path}: CSV file not found (the {split}/ folder exists without it)")
    if not found:
        raise InputError(
            f"{root}: no {' or '.join(f'{s}/{c}' for s, c in SPLIT_CSVS.items())} found; is this a challenge-layout dataset?"
        )
    return found


def read_split_tables(root: Path, required_columns: tuple[str, ...] = ("ID",)) -> dict[str, tuple[Path, pd.DataFrame]]:
    """Each split's CSV path and table (see `read_patient_csv`); an ID listed in two splits is an error."""
    tables: dict[str, tuple[Path, pd.DataFrame]] = {}
    seen: dict[str, Path] = {}
    for split, csv_path in split_csv_paths(root).items():
        table = read_patient_csv(csv_path, required_columns)
        for row, patient_id in table["ID"].items():
            if patient_id in seen:
                raise InputError(f"{csv_path} row {row}: patient {patient_id} is also listed in {seen[patient_id]}")
            seen[patient_id] = csv_path
        tables[split] = (csv_path, table)
    return tables


def discover_patients(root: Path, tables: dict[str, tuple[Path, pd.DataFrame]] | None = None) -> list[PatientEntry]:
    """All patients of all splits, in CSV order; from `tables` (read_split_tables) when the caller read them."""
    tables = read_split_tables(root) if tables is None else tables
    return [
        PatientEntry(values["ID"], split, Path(root) / split / values["ID"], csv_path, int(row), row_fingerprint(values))
        for split, (csv_path, table) in tables.items()
        for row, values in table.iterrows()
    ]


def list_cell_images(folder: Path) -> list[Path]:
    """A patient's image files in a stable (sorted by name) order; other files are ignored."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
