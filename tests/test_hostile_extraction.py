"""Hostile inputs to stage 1 (extract.py): every image mode PIL opens, links out of the dataset, unusable files,
datasets that change between runs, outputs aimed at inputs, a full disk. Each case asserts the exact outcome:
a verified embedding, a recorded skip with its reason, or one `error:` line (exit 2, no traceback) with
nothing lost.

The image cases share one extraction (`odd`): each patient holds one kind of file, and where an image has an
exact 8-bit RGB equivalent, a reference patient holds that, so the two embeddings must agree.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import extract as extract_cli
from conftest import REPO, SMALL_CLI_ARGS, assert_one_line_error, run_main, small_settings, subprocess_env, write_dataset
from lymphocytosis.contract.store import load_bags
from lymphocytosis.extract.extraction import extract


def cell_pixels(seed: int = 0) -> np.ndarray:
    """A 224x224 'cell': a dark disk on a pale background with some texture (never blank)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:224, :224]
    disk = (x - 112) ** 2 + (y - 112) ** 2 < 50 ** 2
    grey = np.where(disk, 90, 220) + rng.integers(-20, 20, (224, 224))
    return np.clip(grey, 0, 255).astype(np.uint8)


GREY = cell_pixels()
COLOUR = np.stack([GREY, np.roll(GREY, 7, 0), np.roll(GREY, 13, 1)], axis=-1)


def images(tmp: Path) -> dict:
    """Patient -> files; references are the exact 8-bit RGB equivalents of the odd files."""
    tmp.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(COLOUR)
    palette = rgb.quantize(64)
    rgba = np.dstack([COLOUR, np.where(GREY > 150, 60, 255).astype(np.uint8)])
    over_white = (COLOUR * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255)).round().astype(np.uint8)
    cmyk = tmp / "cmyk.jpg"
    rgb.convert("CMYK").save(cmyk)
    outside = tmp / "outside"
    outside.mkdir()
    Image.fromarray(COLOUR).save(outside / "elsewhere.png")
    bomb = Image.new("1", (12000, 12000))
    bomb.putpixel((5, 5), 1)
    bomb_path = tmp / "bomb.png"
    bomb.save(bomb_path)
    return {
        "REF_GREY": [("a.png", Image.fromarray(GREY).convert("RGB"))],
        "GREY8": [("a.png", Image.fromarray(GREY))],
        "GREY16": [("a.png", Image.fromarray(GREY.astype(np.uint16) * 257))],
        "GREY32": [("a.tif", Image.fromarray(GREY.astype(np.int32)))],
        "FLOAT": [("a.tif", Image.fromarray(GREY.astype(np.float32) / 255))],
        "REF_PALETTE": [("a.png", palette.convert("RGB"))],
        "PALETTE": [("a.png", palette)],
        "REF_RGBA": [("a.png", Image.fromarray(over_white))],
        "RGBA": [("a.png", Image.fromarray(rgba, "RGBA"))],
        "REF_CMYK": [("a.png", Image.open(cmyk).convert("RGB"))],
        "CMYK": [("a.jpg", cmyk)],
        "BLANK": [("a.png", Image.new("RGB", (224, 224), (200, 170, 210)))],
        "TINY": [("a.png", Image.fromarray(COLOUR[:8, :8]))],
        "BOMB": [("a.png", bomb_path)],
        "REF_COLOUR": [("a.png", rgb)],
        "LINKIN": [],  # a link to REF_COLOUR's image, made below
        "LINKOUT": [],  # a link to a file outside the dataset (an archive), made below
        "FOLDERLINK": None,  # the folder itself is a link to outside the dataset, made below
        "ODDNAMES": [("b.png", rgb), ("cell\\3.png", rgb), ("bell\x07.png", rgb)],  # names no file can record
        "BADNAME": [("b.png", rgb)],  # plus a file whose name is not UTF-8, made below
        "DIRJPG": [("b.png", rgb)],  # plus a folder named like an image, made below
        "_outside": outside,
    }


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    base = tmp_path_factory.mktemp("odd")
    files = images(base / "sources")
    outside = files.pop("_outside")
    root = write_dataset(base / "dlmi", {"trainset": files})
    patients = root / "trainset"
    (patients / "LINKIN" / "a.png").symlink_to(patients / "REF_COLOUR" / "a.png")
    (patients / "LINKOUT" / "a.png").symlink_to(outside / "elsewhere.png")
    (patients / "FOLDERLINK").symlink_to(outside, target_is_directory=True)
    with open(os.path.join(os.fsencode(patients / "BADNAME"), b"\xff\xfe-latin.png"), "wb") as handle:
        handle.write((patients / "BADNAME" / "b.png").read_bytes())
    (patients / "DIRJPG" / "folder.jpg").mkdir()
    out = base / "odd.h5"
    summary = extract(root, out, small_settings())
    return summary, load_bags(out)[1]


@pytest.mark.parametrize("patient, reference", [
    ("GREY8", "REF_GREY"), ("GREY16", "REF_GREY"), ("GREY32", "REF_GREY"), ("FLOAT", "REF_GREY"),
    ("PALETTE", "REF_PALETTE"), ("RGBA", "REF_RGBA"), ("CMYK", "REF_CMYK"), ("LINKIN", "REF_COLOUR"),
    ("LINKOUT", "REF_COLOUR"), ("FOLDERLINK", "REF_COLOUR"),
])
def test_image_modes_embed_as_their_8bit_rgb_equivalent(odd, patient, reference):
    _, bags = odd
    assert bags[patient].embeddings.shape == (1, 1280) and not bags[patient].skipped
    np.testing.assert_allclose(bags[patient].embeddings, bags[reference].embeddings, atol=1e-5)


def test_sixteen_bit_image_is_not_white(odd):
    """The reported failure: a 16-bit PNG became a pure white image; its embedding was that of a white square."""
    _, bags = odd
    assert not np.allclose(bags["GREY16"].embeddings, bags["BLANK"].embeddings if len(bags["BLANK"].embeddings) else 0)
    assert np.abs(bags["GREY16"].embeddings - bags["REF_GREY"].embeddings).max() < 1e-5


@pytest.mark.parametrize("patient, file, reason", [
    ("BLANK", "a.png", "blank image"),
    ("TINY", "a.png", "too small (8x8 px"),
    ("BOMB", "a.png", "DecompressionBomb"),
    ("ODDNAMES", "cell\\\\3.png", "file name holds a backslash"),
    ("ODDNAMES", "bell\\x07.png", "file name holds a control character"),
    ("BADNAME", "\\xff\\xfe-latin.png", "not valid UTF-8"),
])
def test_unusable_files_are_skipped_with_their_reason(odd, patient, file, reason):
    _, bags = odd
    skipped = {s["file"]: s["reason"] for s in bags[patient].skipped}
    assert file in skipped and reason in skipped[file], bags[patient].skipped


def test_links_placed_in_the_dataset_are_followed(odd):
    """A cohort assembled from an archive with links: the linked folder and image are read, not counted empty."""
    _, bags = odd
    assert bags["FOLDERLINK"].filenames == ["elsewhere.png"] and bags["FOLDERLINK"].note == ""
    assert bags["LINKOUT"].filenames == ["a.png"] and not bags["LINKOUT"].skipped


def test_only_readable_names_are_stored(odd):
    _, bags = odd
    assert bags["BADNAME"].filenames == ["b.png"] and bags["DIRJPG"].filenames == ["b.png"]
    assert bags["ODDNAMES"].filenames == ["b.png"]


def test_totals_count_the_skips(odd):
    summary, bags = odd
    assert summary.n_skipped == sum(len(b.skipped) for b in bags.values()) == 6
    assert summary.n_images == sum(len(b.filenames) for b in bags.values())


# --- datasets that change between runs --------------------------------------------------------------------------------


@pytest.fixture
def small_root(tmp_path, synthetic_cell_images):
    pool = synthetic_cell_images
    return write_dataset(tmp_path / "small", {"trainset": {"A": pool[0:3], "B": pool[3:6]}, "testset": {"C": pool[6:8]}})


def run(root: Path, out: Path, *extra: str):
    return run_main(extract_cli.main, ["--root", str(root), "--out", str(out), *SMALL_CLI_ARGS, *extra])


def test_added_image_re_embeds_exactly_that_patient(small_root, tmp_path, synthetic_cell_images, caplog):
    out = tmp_path / "e.h5"
    assert run(small_root, out).code == 0
    before = load_bags(out)[1]
    shutil.copyfile(synthetic_cell_images[9], small_root / "trainset" / "B" / "new.jpg")
    with caplog.at_level(logging.WARNING):
        assert run(small_root, out).code == 0
    after = load_bags(out)[1]
    assert "1 patients images changed" in caplog.text and ": B" in caplog.text
    assert after["B"].filenames == sorted([*before["B"].filenames, "new.jpg"])
    for patient in ("A", "C"):
        assert np.array_equal(after[patient].embeddings, before[patient].embeddings)
    assert run(small_root, out).code == 0  # and a third run has nothing to do
    assert np.array_equal(load_bags(out)[1]["B"].embeddings, after["B"].embeddings)


def test_removed_image_re_embeds_that_patient(small_root, tmp_path):
    out = tmp_path / "e.h5"
    assert run(small_root, out).code == 0
    gone = sorted((small_root / "trainset" / "A").iterdir())[0]
    gone.unlink()
    assert run(small_root, out).code == 0
    assert gone.name not in load_bags(out)[1]["A"].filenames and len(load_bags(out)[1]["A"].filenames) == 2


def test_refuse_links_skips_linked_folders_and_images_and_records_why(small_root, tmp_path, synthetic_cell_images):
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copyfile(synthetic_cell_images[9], archive / "x.jpg")
    shutil.rmtree(small_root / "testset" / "C")
    (small_root / "testset" / "C").symlink_to(archive, target_is_directory=True)
    (small_root / "trainset" / "A" / "linked.jpg").symlink_to(archive / "x.jpg")
    out = tmp_path / "e.h5"
    assert run(small_root, out, "--refuse-links").code == 0
    bags = load_bags(out)[1]
    assert bags["C"].filenames == [] and bags["C"].note == "folder is a symbolic link, refused (--refuse-links)"
    assert {"file": "linked.jpg", "reason": "symbolic link, refused (--refuse-links)"} in bags["A"].skipped
    assert "linked.jpg" not in bags["A"].filenames and len(bags["A"].filenames) == 3


def test_a_file_written_before_digests_gets_them_from_a_rerun_without_re_embedding(small_root, tmp_path, caplog):
    import h5py

    out = tmp_path / "e.h5"
    assert run(small_root, out).code == 0
    before = load_bags(out)[1]
    with h5py.File(out, "r+") as handle:
        for group in handle["patients"].values():
            del group.attrs["content_sha256"]
    with caplog.at_level(logging.WARNING):
        assert run(small_root, out).code == 0
    assert "written before each patient's embeddings carried a digest: adding them" in caplog.text
    with h5py.File(out, "r") as handle:
        assert all("content_sha256" in group.attrs for group in handle["patients"].values())
    after = load_bags(out)[1]
    for patient, bag in before.items():
        assert after[patient].embeddings.tobytes() == bag.embeddings.tobytes()


def test_edited_csv_row_is_recorded_without_re_embedding(small_root, tmp_path, caplog):
    out = tmp_path / "e.h5"
    assert run(small_root, out).code == 0
    before = load_bags(out)[1]
    csv = small_root / "trainset" / "trainset_true.csv"
    csv.write_text(csv.read_text().replace(",5.5\n", ",6.5\n", 1))
    with caplog.at_level(logging.WARNING):
        assert run(small_root, out).code == 0
    after = load_bags(out)[1]
    assert "CSV rows changed" in caplog.text
    assert after["A"].row_sha256 != before["A"].row_sha256 and np.array_equal(after["A"].embeddings, before["A"].embeddings)


def test_patient_gone_from_the_csv_is_dropped(small_root, tmp_path, caplog):
    out = tmp_path / "e.h5"
    assert run(small_root, out).code == 0
    csv = small_root / "testset" / "testset_data.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    with caplog.at_level(logging.WARNING):
        assert run(small_root, out).code == 0
    assert set(load_bags(out)[1]) == {"A", "B"} and "no longer in the CSVs: dropped: C" in caplog.text


def test_duplicated_header_column_stops_extraction(small_root, tmp_path):
    csv = small_root / "trainset" / "trainset_true.csv"
    csv.write_text(csv.read_text().replace("ID,LABEL,GENDER", "ID,ID,GENDER", 1))
    assert_one_line_error(run(small_root, tmp_path / "e.h5"), str(csv), "column ID appears more than once")


# --- outputs aimed at inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_onto_the_trainset_csv(small_root, overwrite):
    csv = small_root / "trainset" / "trainset_true.csv"
    before = csv.read_bytes()
    assert_one_line_error(run(small_root, csv, *overwrite), "--out", "is an input of this run")
    assert csv.read_bytes() == before


def test_out_onto_an_image(small_root):
    image = sorted((small_root / "trainset" / "A").iterdir())[0]
    before = image.read_bytes()
    line = assert_one_line_error(run(small_root, image, "--overwrite"), str(image))
    assert "not an embeddings file" in line and image.read_bytes() == before


def test_out_is_a_folder(small_root, tmp_path):
    assert_one_line_error(run(small_root, tmp_path), "is a folder")


def test_killed_overwrite_run_keeps_its_parts(small_root, tmp_path, caplog):
    """--overwrite discards only work of other settings: a killed --overwrite run resumes, it does not restart."""
    from lymphocytosis.contract.images import scan_folder
    from lymphocytosis.contract.store import PatientBag
    from lymphocytosis.extract.backbones import load_backbone
    from lymphocytosis.extract.extraction import build_provenance
    from lymphocytosis.extract.parts import PartsFolder
    from lymphocytosis.extract.preprocessing import resolve_preprocessing

    out = tmp_path / "e.h5"
    out_old = run(small_root, out, "--crop", "96")
    assert out_old.code == 0
    model, weights = load_backbone("tf_efficientnet_lite0", None)
    settings = build_provenance(small_settings(), weights, resolve_preprocessing(model, 64, None))
    marker = np.full((3, 1280), 3.0, np.float32)
    names = [p.name for p in scan_folder(small_root / "trainset" / "A", small_root).images]
    PartsFolder(out, settings, 1280, small_root).write(PatientBag(
        "A", "trainset", marker, names, listing_sha256=scan_folder(small_root / "trainset" / "A", small_root).fingerprint,
        row_sha256="0" * 64))
    with caplog.at_level(logging.INFO):
        assert run(small_root, out, "--overwrite").code == 0
    assert "resuming: 1 of 3 patients already done" in caplog.text
    assert np.array_equal(load_bags(out)[1]["A"].embeddings, marker)


# --- a full disk ------------------------------------------------------------------------------------------------------


def mount_small_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_during_extraction(tmp_path, synthetic_root):
    """A filesystem that fills up mid-run (a 400 kB tmpfs): one line naming the file, no segfault, no leftovers."""
    disk = tmp_path / "disk"
    if not mount_small_tmpfs(disk, "400k"):
        pytest.skip("a small tmpfs cannot be mounted here (needs root); test_file_size_limit covers the same path")
    try:
        result = subprocess.run([sys.executable, str(REPO / "extract.py"), "--root", str(synthetic_root), "--out",
                                 str(disk / "e.h5"), *SMALL_CLI_ARGS], cwd=REPO, env=subprocess_env(),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0] and str(disk) in errors[0], result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        leftovers = [p.name for p in disk.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers and not (disk / "e.h5").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_file_size_limit(tmp_path, small_root):
    """The same failure anywhere (no root needed): writes beyond RLIMIT_FSIZE fail with EFBIG."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from lymphocytosis.cli.extract import main\n"
        f"sys.exit(main(['--root', {str(small_root)!r}, '--out', {str(tmp_path / 'e.h5')!r}, *{SMALL_CLI_ARGS!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0], result.stderr[-2000:]
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "e.h5").exists()
    assert run(small_root, tmp_path / "e.h5").code == 0  # with room again, the same command finishes the job
