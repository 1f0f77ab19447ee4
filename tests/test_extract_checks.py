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


def test_a_copied_dataset_with_an_extra_column_reuses_every_embedding(tmp_path, tiny_root, caplog):
    """Reruns go by content: a copy (new modification times, another path) whose CSV gained a column of notes
    embeds nothing again, keeps the embeddings bit-identical, and stage 2 reads it without a rerun at all."""
    import shutil

    from lymphocytosis.contract.store import load_bags, read_provenance
    from lymphocytosis.model.cohort import load_cohort

    out = tmp_path / "e.h5"
    assert run_main(extract_cli.main, cli(tiny_root, out)).code == 0
    _, before = load_bags(out)
    copy = Path(shutil.copytree(tiny_root, tmp_path / "copy", copy_function=shutil.copyfile))  # new mtimes
    train = copy / "trainset" / "trainset_true.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0] + ",NOTES", *(f"{line},seen twice" for line in lines[1:])]) + "\n")
    assert load_cohort(out, copy).clinical.shape[0] == 4  # the extra column changes no row the tool reads

    caplog.clear()
    result = run_main(extract_cli.main, cli(copy, out))
    assert result.code == 0, result.stderr
    assert "the same images for 4 of 4 patients here: their embeddings are reused" in caplog.text, caplog.text
    assert "0 patients to embed, 4 reused" in caplog.text and "embedding them" not in caplog.text
    assert read_provenance(out)["dataset_root"] == str(copy.resolve())  # stage 2 finds the copy's CSVs
    _, after = load_bags(out)
    for patient_id, bag in before.items():
        assert after[patient_id].embeddings.tobytes() == bag.embeddings.tobytes()
    # moved again, one image replaced: that patient alone is embedded again
    image = sorted((copy / "trainset" / "T1").iterdir())[0]
    shutil.copyfile(sorted((copy / "trainset" / "T0").iterdir())[0], image)
    caplog.clear()
    result = run_main(extract_cli.main, cli(copy, out))
    assert result.code == 0, result.stderr
    assert "1 patients images changed since it was made" in caplog.text and "1 patients to embed, 3 reused" in caplog.text


def test_a_file_of_another_dataset_is_not_emptied_by_a_typo(tmp_path, tiny_root, synthetic_cell_images):
    out = tmp_path / "e.h5"
    assert run_main(extract_cli.main, cli(tiny_root, out)).code == 0
    other = write_dataset(tmp_path / "other", {"trainset": {"T0": synthetic_cell_images[0:3]}, "testset": {}})
    result = run_main(extract_cli.main, cli(other, out))
    assert result.code == 2 and "was made from another dataset" in result.stderr and "--overwrite" in result.stderr


def test_stage2_says_empty_patients_once_and_refuses_when_no_patient_has_cells(tmp_path, caplog):
    import model as model_cli
    from conftest import assert_one_line_error, write_fake_embeddings

    some = write_fake_embeddings(tmp_path / "some", empty=("F1", "F2", "T0"))
    caplog.clear()
    result = run_main(model_cli.main, ["cv", "--embeddings", str(some), "--params", "default", "--folds", "3",
                                       "--repeats", "1", "-q", "--max-without-cells", "0.1"])
    assert result.code == 0, result.stderr  # 2 of 24 labelled patients: under the bar that the user raised
    assert "3 patients have 0 cells" in caplog.text and "F1 (folder holds no image files)" in caplog.text
    assert "patient F1 has" not in caplog.text
    everyone = [f"F{i}" for i in range(24)] + [f"T{i}" for i in range(4)]
    none = write_fake_embeddings(tmp_path / "none", empty=tuple(everyone))
    assert_one_line_error(run_main(model_cli.main, ["cv", "--embeddings", str(none), "--params", "default"]),
                          "none of the 28 patients has a cell image", "python extract.py")
