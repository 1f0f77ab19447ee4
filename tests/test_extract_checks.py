"""extract checks everything cheap before the expensive part: every CSV row against the rules stage 2 applies,
all bad values listed at once (one `error:` line each) before a single image is embedded; and its last line
counts every patient, those without a single image too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import extract as extract_cli
from conftest import SMALL_CLI_ARGS, run_main, write_dataset


def cli(root: Path, out: Path) -> list[str]:
    return ["--root", str(root), "--out", str(out), *SMALL_CLI_ARGS]


@pytest.fixture
def tiny_root(tmp_path, synthetic_cell_images) -> Path:
    pool = synthetic_cell_images
    return write_dataset(tmp_path / "tiny", {"trainset": {"T0": pool[0:3], "T1": pool[3:6], "T2": pool[6:8]},
                                             "testset": {"U0": pool[8:10]}})


def test_every_bad_value_of_both_csvs_is_listed_before_anything_is_embedded(tmp_path, tiny_root):
    train, test = tiny_root / "trainset" / "trainset_true.csv", tiny_root / "testset" / "testset_data.csv"
    lines = train.read_text().splitlines()
    lines[1] = "T0,0,male,1/2/1940,5.5"  # GENDER
    lines[3] = "T2,0,F,03.11.1933,abc"  # DOB and LYMPH_COUNT of one row
    train.write_text("\n".join(lines) + "\n")
    test.write_text(test.read_text().replace("U0,-1", "U0,1"))  # a label in the testset
    result = run_main(extract_cli.main, cli(tiny_root, tmp_path / "e.h5"))
    assert result.code == 2 and "Traceback" not in result.stderr
    errors = result.error_lines
    assert len(errors) == 5, result.stderr  # four bad values, one line each, and the count
    assert f"{train} row 2, patient T0, column GENDER: 'male' is not M or F" in errors[0]
    assert "row 4, patient T2, column DOB: '03.11.1933'" in errors[1] and "column LYMPH_COUNT" in errors[2]
    assert f"{test} row 2, patient U0, column LABEL" in errors[3]
    assert errors[4] == "error: 4 bad values in the CSVs; nothing was embedded: correct them and rerun"
    assert not (tmp_path / "e.h5").exists() and not Path(f"{tmp_path / 'e.h5'}.parts").exists()
    assert not (tmp_path / "logs").exists()  # refused before the run started


def test_the_last_line_counts_patients_without_images(tmp_path, tiny_root):
    for image in (tiny_root / "trainset" / "T1").iterdir():
        image.unlink()
    result = run_main(extract_cli.main, cli(tiny_root, tmp_path / "e.h5"))
    assert result.code == 0, result.stderr
    assert result.stdout.strip().endswith("4 patients, 7 images, 0 skipped, 1 patients without images (T1)"), result.stdout
