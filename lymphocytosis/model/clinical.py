"""Clinical attributes from the challenge CSVs, parsed strictly with the rules of contract/clinical.py (which
`extract` applies too, before embedding): every bad value names file, row, patient, column, all listed at once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..contract.clinical import (  # noqa: F401  (re-exported: stage 2's readers of the CSV rules)
    CLINICAL_COLUMNS,
    REFERENCE_DATE,
    age_at_reference,
    parse_dob,
    parse_label,
    parse_table,
)
from ..contract.layout import read_patient_csv, read_split_tables
from ..errors import InputErrors

CLINICAL_FEATURES = ("age", "sex_male", "lymph_count", "log_lymph_count")


def clinical_frame(csv_path: Path, split: str, table: pd.DataFrame) -> pd.DataFrame:
    """One split's parsed rows, indexed by patient ID."""
    records = parse_table(csv_path, split, table)
    frame = pd.DataFrame.from_records(records, columns=["ID", "label", *CLINICAL_FEATURES, "row_sha256"])
    frame["split"] = split
    return frame.set_index("ID")


def read_clinical_csv(csv_path: Path, split: str) -> pd.DataFrame:
    """One split's CSV, read and parsed."""
    return clinical_frame(csv_path, split, read_patient_csv(csv_path, CLINICAL_COLUMNS))


def read_clinical(root: Path) -> pd.DataFrame:
    """Every patient of the dataset: label (-1 = unknown), split and the clinical features, indexed by ID; every
    bad value of both CSVs listed at once."""
    tables = read_split_tables(root, CLINICAL_COLUMNS)
    frames, problems = [], []
    for split, (csv_path, table) in tables.items():
        try:
            frames.append(clinical_frame(csv_path, split, table))
        except InputErrors as exc:
            problems += exc.messages
    if problems:
        raise InputErrors(problems, "in the CSVs")
    return pd.concat(frames)
