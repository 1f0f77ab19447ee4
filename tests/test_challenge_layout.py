"""The challenge layout reader: which patients exist, which IDs are acceptable, which files are cell images."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymphocytosis.contract.layout import (
    discover_patients,
    list_cell_images,
    read_patient_csv,
    read_split_tables,
    split_csv_paths,
    validate_patient_id,
)
from lymphocytosis.errors import InputError

HEADER = "ID,LABEL,GENDER,DOB,LYMPH_COUNT"


def write_split(root: Path, split: str, ids: list[str], header: str = HEADER) -> Path:
    csv_name = {"trainset": "trainset_true.csv", "testset": "testset_data.csv"}[split]
    (root / split).mkdir(parents=True, exist_ok=True)
    rows = [header] + [f"{patient_id},1,M,1/2/1950,5.5" for patient_id in ids]
    path = root / split / csv_name
    path.write_text("\n".join(rows) + "\n")
    return path


def test_discovers_synthetic_patients_in_csv_order(synthetic_root):
    patients = discover_patients(synthetic_root)
    assert [p.patient_id for p in patients] == [f"S{i}" for i in range(12)] + ["S1000", "S1001", "S1002"]
    assert {p.split for p in patients[:12]} == {"trainset"} and {p.split for p in patients[12:]} == {"testset"}
    first = patients[0]
    assert first.folder == synthetic_root / "trainset" / "S0"
    assert first.csv_path == synthetic_root / "trainset" / "trainset_true.csv"
    assert first.row == 2  # header is line 1
    assert patients[3].row == 5


@pytest.mark.parametrize(
    "bad_id",
    ["P1/x", "../P1", "..", ".", "P..1", "P 1", "P1;rm", "Pé", "-P1", ".hidden", "P1\\x", "P*"],
)
def test_invalid_ids_are_refused_naming_file_and_row(tmp_path, bad_id):
    csv = write_split(tmp_path, "trainset", ["P0", "P1", bad_id])
    with pytest.raises(InputError) as info:
        discover_patients(tmp_path)
    message = str(info.value)
    assert str(csv) in message and "row 4" in message, message
    assert "invalid patient ID" in message


def test_empty_id_is_refused_naming_file_and_row(tmp_path):
    csv = tmp_path / "trainset" / "trainset_true.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text(f"{HEADER}\nP0,1,M,1/2/1950,5.5\n,0,F,1/2/1950,5.5\n")
    with pytest.raises(InputError, match="row 3") as info:
        read_patient_csv(csv, ("ID",))
    assert str(csv) in str(info.value)


@pytest.mark.parametrize("good_id", ["P0", "P183", "a", "A_b-c.d", "0x"])
def test_valid_ids_pass(good_id):
    assert validate_patient_id(good_id, "somewhere") == good_id


def test_duplicate_id_in_one_csv_names_the_second_row(tmp_path):
    csv = write_split(tmp_path, "trainset", ["P0", "P1", "P2", "P1"])
    with pytest.raises(InputError) as info:
        discover_patients(tmp_path)
    assert f"{csv} row 5" in str(info.value) and "P1" in str(info.value) and "more than once" in str(info.value)


def test_same_id_in_two_splits_is_refused(tmp_path):
    write_split(tmp_path, "trainset", ["P0", "P1"])
    test_csv = write_split(tmp_path, "testset", ["P7", "P1"])
    with pytest.raises(InputError) as info:
        discover_patients(tmp_path)
    assert f"{test_csv} row 3" in str(info.value) and "also listed" in str(info.value)


def test_ids_and_headers_are_stripped(tmp_path):
    csv = tmp_path / "trainset" / "trainset_true.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text(" id , LABEL\nP0 ,1\n  P1,0\n")
    assert [p.patient_id for p in discover_patients(tmp_path)] == ["P0", "P1"]


def test_missing_root(tmp_path):
    with pytest.raises(InputError, match="dataset root not found"):
        split_csv_paths(tmp_path / "nope")


def test_root_without_any_split(tmp_path):
    with pytest.raises(InputError, match="challenge-layout"):
        split_csv_paths(tmp_path)


def test_split_folder_without_its_csv(tmp_path):
    write_split(tmp_path, "trainset", ["P0"])
    (tmp_path / "testset" / "P9").mkdir(parents=True)
    with pytest.raises(InputError) as info:
        split_csv_paths(tmp_path)
    assert "testset_data.csv" in str(info.value) and "CSV file not found" in str(info.value)


def test_one_split_alone_is_enough(tmp_path):
    write_split(tmp_path, "testset", ["P0"])
    assert list(split_csv_paths(tmp_path)) == ["testset"]


def test_csv_missing_id_column(tmp_path):
    csv = write_split(tmp_path, "trainset", ["P0"], header="PATIENT,LABEL,GENDER,DOB,LYMPH_COUNT")
    with pytest.raises(InputError) as info:
        discover_patients(tmp_path)
    assert str(csv) in str(info.value) and "missing column(s) ID" in str(info.value)


def test_required_columns_are_checked(tmp_path):
    write_split(tmp_path, "trainset", ["P0"], header="ID,LABEL,GENDER,DOB")
    with pytest.raises(InputError, match="LYMPH_COUNT"):
        read_split_tables(tmp_path, ("ID", "LABEL", "LYMPH_COUNT"))


def test_unreadable_csv(tmp_path):
    csv = tmp_path / "trainset" / "trainset_true.csv"
    csv.parent.mkdir(parents=True)
    csv.write_bytes(b"")
    with pytest.raises(InputError, match="not a readable CSV"):
        discover_patients(tmp_path)


def test_csv_row_without_folder_is_a_patient(tmp_path):
    write_split(tmp_path, "trainset", ["P0"])
    (tmp_path / "trainset" / "P_not_listed").mkdir()
    patients = discover_patients(tmp_path)
    assert [p.patient_id for p in patients] == ["P0"]
    assert list_cell_images(patients[0].folder) == []


def test_image_listing_sorted_case_insensitive_and_filtered(tmp_path):
    folder = tmp_path / "P0"
    folder.mkdir()
    images = ["000010.jpg", "000002.JPG", "a.jpeg", "b.JPEG", "c.png", "d.PNG", "e.tif", "f.TIFF", "g.bmp", "h.Bmp"]
    others = ["notes.txt", "labels.csv", "000001.jpg.bak", "noext", ".hidden.jpg", ".DS_Store", "Thumbs.db"]
    for name in images + others:
        (folder / name).write_bytes(b"x")
    (folder / "sub.jpg").mkdir()  # a folder, even with an image suffix, is not an image
    (folder / "sub.jpg" / "inner.jpg").write_bytes(b"x")
    listed = [p.name for p in list_cell_images(folder)]
    assert listed == sorted(images)
    assert listed[:2] == ["000002.JPG", "000010.jpg"]
    assert all(p.parent == folder for p in list_cell_images(folder))


def test_image_listing_missing_folder(tmp_path):
    assert list_cell_images(tmp_path / "missing") == []


def test_image_listing_follows_symlinks(tmp_path):
    (tmp_path / "real.jpg").write_bytes(b"x")
    folder = tmp_path / "P0"
    folder.mkdir()
    (folder / "link.jpg").symlink_to(tmp_path / "real.jpg")
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    assert [p.name for p in list_cell_images(folder)] == ["link.jpg"]
