"""Clinical CSVs: the real files' quirks are parsed, every bad value is an error naming file, row, patient and
column, and nothing is dropped silently between the CSVs and the embeddings (also through `model.py cv`)."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import pytest

import model as model_cli
from conftest import CSV_HEADER, assert_one_line_error, run_main
from lymphocytosis.errors import InputError
from lymphocytosis.model.clinical import REFERENCE_DATE, age_at_reference, parse_dob, read_clinical, read_clinical_csv

GOOD_ROW = "P7,1,M,1/2/1950,4.5"


def write_csv(path: Path, rows: list[str], header: str = CSV_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# --- quirks ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("11/3/1933", dt.date(1933, 11, 3)),  # M/D/YYYY: November 3rd, not March 11th
    ("1/12/1950", dt.date(1950, 1, 12)),
    ("28-04-1943", dt.date(1943, 4, 28)),  # DD-MM-YYYY
    ("03-11-1933", dt.date(1933, 11, 3)),
    ("1943-04-28", dt.date(1943, 4, 28)),  # ISO
])
def test_parse_dob_formats(text, expected):
    assert parse_dob(text) == expected


@pytest.mark.parametrize("text", ["31-02-1950", "2/30/1950", "13/1/1950", "1950/04/28", "28.04.1943", "", "1/2/50",
                                  "1/1/2030", "1/1/1700"])
def test_parse_dob_rejects(text):
    with pytest.raises(ValueError):
        parse_dob(text)


def test_csv_quirks_parsed(tmp_path):
    csv = write_csv(tmp_path / "trainset_true.csv", [
        "P1,1,M,11/3/1933,12.5",
        "P2,0,f,28-04-1943,3",
        " P3 , 0 , m , 1950-06-30 , 1.0 ",  # whitespace around every value
        "P4,1.0,F,1/1/2000,100",
    ], header="ID, LABEL ,GENDER,DOB,LYMPH_COUNT")  # and around the header
    table = read_clinical_csv(csv, "trainset")
    assert list(table.index) == ["P1", "P2", "P3", "P4"]
    assert list(table["label"]) == [1, 0, 0, 1]
    assert list(table["sex_male"]) == [1.0, 0.0, 1.0, 0.0]
    assert set(table["split"]) == {"trainset"}
    assert table.loc["P1", "age"] == pytest.approx((REFERENCE_DATE - dt.date(1933, 11, 3)).days / 365.25)
    assert table.loc["P2", "age"] == pytest.approx((REFERENCE_DATE - dt.date(1943, 4, 28)).days / 365.25)
    assert table.loc["P4", "age"] == pytest.approx(20.0, abs=0.01)  # born 1 Jan 2000, reference 1 Jan 2020
    assert dt.date(2020, 1, 1) == REFERENCE_DATE
    assert list(table["lymph_count"]) == [12.5, 3.0, 1.0, 100.0]
    assert table["log_lymph_count"].tolist() == pytest.approx([math.log(12.5), math.log(3), 0.0, math.log(100)])


def test_age_does_not_depend_on_today():
    assert age_at_reference(dt.date(1960, 1, 1)) == pytest.approx(60.0, abs=0.01)


def test_read_clinical_both_splits(tmp_path):
    write_csv(tmp_path / "trainset" / "trainset_true.csv", ["A1,1,M,1/2/1950,4", "A2,0,F,1/2/1960,2"])
    write_csv(tmp_path / "testset" / "testset_data.csv", ["B1,-1,F,1/2/1940,3"])
    table = read_clinical(tmp_path)
    assert table["split"].to_dict() == {"A1": "trainset", "A2": "trainset", "B1": "testset"}
    assert table["label"].to_dict() == {"A1": 1, "A2": 0, "B1": -1}


# --- every bad value is an error naming file, row, patient, column ----------------------------------------------


@pytest.mark.parametrize("row, column", [
    ("P9,1,M,not-a-date,4.5", "DOB"),
    ("P9,1,M,31-02-1950,4.5", "DOB"),  # impossible date
    ("P9,1,M,2/30/1950,4.5", "DOB"),
    ("P9,1,M,,4.5", "DOB"),
    ("P9,1,M,1/2/1950,-3", "LYMPH_COUNT"),
    ("P9,1,M,1/2/1950,0", "LYMPH_COUNT"),
    ("P9,1,M,1/2/1950,", "LYMPH_COUNT"),
    ("P9,1,M,1/2/1950,abc", "LYMPH_COUNT"),
    ("P9,1,M,1/2/1950,nan", "LYMPH_COUNT"),
    ("P9,1,M,1/2/1950,inf", "LYMPH_COUNT"),
    ("P9,1,X,1/2/1950,4.5", "GENDER"),
    ("P9,1,,1/2/1950,4.5", "GENDER"),
    ("P9,1,male,1/2/1950,4.5", "GENDER"),
    ("P9,2,M,1/2/1950,4.5", "LABEL"),
    ("P9,,M,1/2/1950,4.5", "LABEL"),
    ("P9,yes,M,1/2/1950,4.5", "LABEL"),
])
def test_bad_value_names_file_row_patient_column(tmp_path, row, column):
    csv = write_csv(tmp_path / "trainset_true.csv", [GOOD_ROW, "P8,0,F,28-04-1943,2", row])
    with pytest.raises(InputError) as info:
        read_clinical_csv(csv, "trainset")
    message = str(info.value)
    assert str(csv) in message
    assert "row 4" in message  # header is line 1: the third data row is line 4
    assert "patient P9" in message
    assert f"column {column}" in message


@pytest.mark.parametrize("drop", ["DOB", "LYMPH_COUNT", "GENDER", "LABEL"])
def test_missing_column(tmp_path, drop):
    columns = CSV_HEADER.split(",")
    keep = [i for i, c in enumerate(columns) if c != drop]
    rows = [",".join(GOOD_ROW.split(",")[i] for i in keep)]
    csv = write_csv(tmp_path / "trainset_true.csv", rows, header=",".join(columns[i] for i in keep))
    with pytest.raises(InputError, match=f"missing column.*{drop}") as info:
        read_clinical_csv(csv, "trainset")
    assert str(csv) in str(info.value)


def test_patient_in_two_splits(tmp_path):
    write_csv(tmp_path / "trainset" / "trainset_true.csv", ["A1,1,M,1/2/1950,4"])
    write_csv(tmp_path / "testset" / "testset_data.csv", ["A1,-1,M,1/2/1950,4"])
    with pytest.raises(InputError, match="A1"):
        read_clinical(tmp_path)


# --- through the CLI: a dataset whose CSV was changed after extraction -------------------------------------------


@pytest.fixture
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """CSVs of the synthetic dataset only (load_cohort reads no image), in a writable copy."""
    root = tmp_path / "dlmi"
    for csv in synthetic_root.glob("*/*.csv"):
        target = root / csv.parent.name / csv.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(csv, target)
    return root


def edit_row(csv: Path, row: int, edit) -> str:
    """Apply `edit(fields) -> fields | None` (None deletes) to data row `row` (1-based line number); its ID."""
    lines = csv.read_text().splitlines()
    fields = lines[row - 1].split(",")
    changed = edit(list(fields))
    if changed is None:
        del lines[row - 1]
    else:
        lines[row - 1] = ",".join(changed)
    csv.write_text("\n".join(lines) + "\n")
    return fields[0]


def cv(embeddings: Path, root: Path):
    return run_main(model_cli.main, ["cv", "--embeddings", str(embeddings), "--root", str(root), "--params", "default",
                                     "--folds", "3", "--repeats", "1"])


@pytest.mark.parametrize("column, value", [(3, "31-02-1950"), (4, "-1"), (2, "Q"), (1, "2"), (4, "")])
def test_cli_corrupted_csv_one_line_error(synthetic_embeddings, dataset_copy, column, value):
    csv = dataset_copy / "trainset" / "trainset_true.csv"
    patient = edit_row(csv, 4, lambda f: f[:column] + [value] + f[column + 1:])
    name = CSV_HEADER.split(",")[column]
    assert_one_line_error(cv(synthetic_embeddings, dataset_copy), str(csv), "row 4", f"patient {patient}",
                          f"column {name}")


def test_cli_patient_without_embeddings(synthetic_embeddings, dataset_copy):
    csv = dataset_copy / "testset" / "testset_data.csv"
    with csv.open("a") as handle:
        handle.write("NEW1,-1,F,1/2/1950,3.5\n")
    assert_one_line_error(cv(synthetic_embeddings, dataset_copy), str(synthetic_embeddings), "NEW1", "no embeddings")


def test_cli_embeddings_without_csv_row(synthetic_embeddings, dataset_copy):
    csv = dataset_copy / "trainset" / "trainset_true.csv"
    patient = edit_row(csv, 3, lambda f: None)
    assert_one_line_error(cv(synthetic_embeddings, dataset_copy), str(synthetic_embeddings), f"patient {patient}",
                          "no row")


def test_cli_missing_split_csv(synthetic_embeddings, dataset_copy):
    (dataset_copy / "testset" / "testset_data.csv").unlink()
    # the testset folder is still there: an error, not a dataset without its test patients
    assert_one_line_error(cv(synthetic_embeddings, dataset_copy), "testset_data.csv")


@pytest.mark.parametrize("row", ["P9,1", "P9,1,M,1/2/1950,4.5,"])
def test_ragged_row_names_file_row_patient(tmp_path, row):
    """A short row or a trailing comma is refused with its line, not padded or shifted into other columns."""
    csv = write_csv(tmp_path / "trainset_true.csv", [GOOD_ROW, "P8,0,F,28-04-1943,2", row])
    with pytest.raises(InputError) as info:
        read_clinical_csv(csv, "trainset")
    assert f"{csv} row 4, patient P9" in str(info.value) and "fields, the header has 5" in str(info.value)
