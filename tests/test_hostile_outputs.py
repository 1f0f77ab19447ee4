"""Outputs that must not destroy what the user had, and embeddings that must not pass when tampered with.

Ownership: an output is written only where nothing is, or over the tool's own kind of file (recognised by
format key or exact header); never over a device, FIFO, socket or symbolic link; a folder output is replaced
whole only when everything in it is listed in the manifest the tool wrote there. Integrity: every patient's
bag carries a digest checked before use; links and declared sizes are checked before any array is read.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import model as model_cli
from conftest import assert_one_line_error, run_main, write_fake_embeddings, write_small_params
from lymphocytosis.errors import InputError
from lymphocytosis.files import MANIFEST, remove_stale_temporaries


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Fake embeddings, parameters, a fitted model, saved CV results and a cv --json summary."""
    base = tmp_path_factory.mktemp("outputs")
    embeddings = write_fake_embeddings(base)

    write_small_params(base / "params.json", embeddings)
    assert run_main(model_cli.main, ["fit", *data(base), "--model-dir", str(base / "model")]).code == 0
    assert cv(base, "--json", str(base / "summary.json")).code == 0
    return base


@pytest.fixture
def work(made, tmp_path) -> Path:
    for name in ("dlmi", "model", "cv"):
        shutil.copytree(made / name, tmp_path / name, symlinks=True)
    for name in ("embeddings.h5", "params.json", "summary.json"):
        shutil.copyfile(made / name, tmp_path / name)
    return tmp_path


def results(base: Path) -> Path:
    """The one saved CV's folder: --cv-dir keeps one per settings and design."""
    (folder,) = [p.parent for p in (base / "cv").glob("*/cv.json")]
    return folder


def data(base: Path) -> list[str]:
    return ["--embeddings", str(base / "embeddings.h5"), "--params", str(base / "params.json")]


def cv(base: Path, *extra: str):
    return run_main(model_cli.main, ["cv", *data(base), "--folds", "3", "--repeats", "1", "--cv-dir", str(base / "cv"),
                                     *extra])


def predict(base: Path, out: Path, submission: Path):
    return run_main(model_cli.main, ["predict", "--embeddings", str(base / "embeddings.h5"), "--model-dir",
                                     str(base / "model"), "--out", str(out), "--submission", str(submission)])


# --- files ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["model.json", "cv.json", "README", "cell.jpg"])
def test_cv_json_never_replaces_another_file(work, victim):
    sources = {"model.json": work / "model" / "model.json", "cv.json": results(work) / "cv.json"}
    target = work / f"copy-of-{victim}"
    if victim in sources:
        shutil.copyfile(sources[victim], target)
    else:
        target.write_bytes(b"\xff\xd8\xff\xe0 a JPEG" if victim == "cell.jpg" else b"# my dataset\n")
    before = target.read_bytes()
    assert_one_line_error(cv(work, "--json", str(target)), f"--json {target}: exists and is not a cross-validation "
                          "summary (cv --json) written by this tool", "left untouched")
    assert target.read_bytes() == before


def test_cv_json_replaces_its_own_summary(work):
    assert cv(work, "--json", str(work / "summary.json")).code == 0
    assert json.loads((work / "summary.json").read_text())["folds"] == 3


def test_predict_outputs_only_replace_their_own_kind(work):
    out, submission = work / "p.csv", work / "s.csv"
    assert predict(work, out, submission).code == 0
    assert predict(work, out, submission).code == 0  # its own files: replaced
    assert_one_line_error(predict(work, submission, work / "s2.csv"), f"--out {submission}: exists and is not a "
                          "predictions file")
    assert_one_line_error(predict(work, work / "p2.csv", out), f"--submission {out}: exists and is not a submission")
    (work / "notes.csv").write_text("ID,LABEL\nP1,1\n")
    assert_one_line_error(predict(work, work / "notes.csv", work / "s3.csv"), "is not a predictions file")
    assert (work / "notes.csv").read_text() == "ID,LABEL\nP1,1\n"


@pytest.mark.parametrize("kind", ["fifo", "symlink", "device", "folder"])
def test_outputs_are_never_special_files(work, kind):
    target = work / "special"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        target.symlink_to("/proc/self/fd/1")
    elif kind == "folder":
        target.mkdir()
    else:
        target = Path("/dev/null")
    words = {"fifo": "is a FIFO", "symlink": "is a symbolic link", "device": "is a device", "folder": "is a folder"}
    assert_one_line_error(predict(work, target, work / "s.csv"), f"--out {target}: {words[kind]}")
    assert os.path.lexists(target) and not (work / "s.csv").exists()
    if kind == "symlink":
        assert os.readlink(target) == "/proc/self/fd/1"


# --- folders ----------------------------------------------------------------------------------------------------------


def test_cv_dir_with_a_user_file_inside_is_refused_and_kept(work):
    (results(work) / "folds" / "my-notes.txt").write_text("mine")
    assert_one_line_error(cv(work), "--cv-dir", "holds other files than this tool wrote there (folds/my-notes.txt)")
    assert (results(work) / "folds" / "my-notes.txt").read_text() == "mine"


def test_user_files_beside_the_saved_cvs_are_never_touched(work):
    (work / "cv" / "my-notes.txt").write_text("mine")  # beside the per-settings folders, which alone are replaced
    assert cv(work).code == 0
    assert (work / "cv" / "my-notes.txt").read_text() == "mine"


def test_cv_dir_of_the_tool_is_replaced_and_carries_its_manifest(work):
    manifest = json.loads((results(work) / MANIFEST).read_text())
    assert manifest["kind"] == "cv" and manifest["entries"]["cv.json"] == "f" and manifest["entries"]["folds"] == "d"
    assert cv(work).code == 0


def test_cv_dir_written_before_manifests_is_recognised_by_its_layout(work):
    (results(work) / MANIFEST).unlink()
    assert cv(work).code == 0 and (results(work) / MANIFEST).is_file()
    (results(work) / MANIFEST).unlink()
    (results(work) / "extra.csv").write_text("x")
    assert_one_line_error(cv(work), "holds other files than this tool wrote there (extra.csv)")


def test_report_dir_with_a_nested_user_file_is_refused(work):
    from lymphocytosis.files import require_own_folder

    report = work / "report"
    (report / "cells" / "P1").mkdir(parents=True)
    (report / ".lymphocytosis-report").write_text("lymphocytosis report\n")
    (report / "cells" / "P1" / "top1.jpg").write_bytes(b"x")
    require_own_folder("--out-dir", report, "report", ("cells", "cells/*", "cells/*/*.jpg", ".lymphocytosis-report"))
    (report / "cells" / "P1" / "biopsy.pdf").write_bytes(b"%PDF")
    with pytest.raises(InputError, match=r"--out-dir .*cells/P1/biopsy.pdf"):
        require_own_folder("--out-dir", report, "report", ("cells", "cells/*", "cells/*/*.jpg"))


def test_extract_overwrite_never_discards_a_user_folder_named_like_its_parts(tmp_path):
    from conftest import FAKE_PROVENANCE
    from lymphocytosis.extract.parts import PartsFolder

    user = tmp_path / "e.h5.parts"
    (user / "photos").mkdir(parents=True)
    (user / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match=r"e.h5.parts: not an interrupted extraction of this tool \(holds photos"):
        PartsFolder(tmp_path / "e.h5", FAKE_PROVENANCE, 16, tmp_path, discard_other=True)
    assert (user / "photos" / "holiday.jpg").read_bytes() == b"x"


def test_temporaries_left_by_a_killed_run_are_removed_by_the_next(work):
    target = results(work)  # the folder the CV replaces: its temporaries lie beside it
    stale = target.parent / f".{target.name}.abc123.tmp"
    (stale / "folds").mkdir(parents=True)
    live = target.parent / f".{target.name}.live99.tmp"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running writer holds its temporary folder
    try:
        assert cv(work).code == 0
        assert not stale.exists() and live.is_dir()
    finally:
        os.close(fd)
    assert remove_stale_temporaries(target) == [live] and not live.exists()


def test_full_disk_is_named_as_such(tmp_path, monkeypatch):
    import errno

    from lymphocytosis.files import atomic_write_text

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError, match=r"out.txt: cannot write: the disk is full \(No space left on device\)"):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert list(tmp_path.iterdir()) == []


# --- embeddings integrity ---------------------------------------------------------------------------------------------


def test_digest_catches_an_edited_value(tmp_path):
    from lymphocytosis.contract.store import load_bags

    h5 = write_fake_embeddings(tmp_path)
    with h5py.File(h5, "r+") as handle:
        values = handle["patients/F3/embeddings"][()]
        values[0, 0] += 0.25  # plausible, finite: only the digest can tell
        handle["patients/F3/embeddings"][...] = values
    with pytest.raises(InputError, match="patient F3: damaged embeddings .content differs from the digest"):
        load_bags(h5)


def test_bags_of_other_settings_copied_in_are_refused(tmp_path):
    """Crop 96 data under a provenance saying crop 112: same shape, same dimension; the digest is bound to it."""
    from lymphocytosis.contract.store import load_bags

    h112 = write_fake_embeddings(tmp_path / "a", provenance={"preprocessing": '{"crop": 112, "input_size": 112}'})
    h96 = write_fake_embeddings(tmp_path / "b", seed=1, provenance={"preprocessing": '{"crop": 96, "input_size": 96}'})
    with h5py.File(h112, "r+") as target, h5py.File(h96, "r") as source:
        del target["patients/F2"]
        source.copy(source["patients/F2"], target["patients"], name="F2")
        target["patients/F2"].attrs["row_sha256"] = source["patients/F2"].attrs["row_sha256"]
    with pytest.raises(InputError, match="patient F2: damaged embeddings .content differs from the digest"):
        load_bags(h112)


@pytest.mark.parametrize("link", ["external", "soft"])
def test_links_inside_the_embeddings_file_are_refused(tmp_path, link):
    from lymphocytosis.contract.store import load_bags

    h5 = write_fake_embeddings(tmp_path / "a")
    other = write_fake_embeddings(tmp_path / "b", seed=3)
    with h5py.File(h5, "r+") as handle:
        del handle["patients/F0"]
        handle["patients/F0"] = (h5py.ExternalLink(str(other), "/patients/F0") if link == "external"
                                 else h5py.SoftLink("/patients/F1"))
    word = "an external link to" if link == "external" else "a soft link to '/patients/F1'"
    with pytest.raises(InputError, match=f"patient F0: group F0 is {word}"):
        load_bags(h5)


def test_a_huge_declared_dataset_is_refused_before_it_is_read(tmp_path):
    """3M x 1280 float32 declared (14.3 GiB) in a file of a few kilobytes: refused without allocating it."""
    from lymphocytosis.contract.store import load_bags

    h5 = write_fake_embeddings(tmp_path)
    with h5py.File(h5, "r+") as handle:
        del handle["patients/F0/embeddings"]
        handle["patients/F0"].create_dataset("embeddings", shape=(3_000_000, 16), dtype="float32")
    assert h5.stat().st_size < 4 * 2**20
    with pytest.raises(InputError, match=r"patient F0: damaged embeddings \(embeddings declares \(3000000, 16\) values "
                                         r"\(183.1 MiB\), more than the whole file holds"):
        load_bags(h5)


def test_files_without_digests_are_read_with_one_warning(tmp_path, caplog):
    from lymphocytosis.contract.store import load_bags

    h5 = write_fake_embeddings(tmp_path)
    with h5py.File(h5, "r+") as handle:
        for group in handle["patients"].values():
            del group.attrs["content_sha256"]
    bags = load_bags(h5)[1]
    assert len(bags) == 28
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "28 of 28 patients' embeddings carry no digest" in warnings[0]


def test_the_digest_adds_an_attribute_and_leaves_the_embeddings_bytes_alone(tmp_path):
    from conftest import FAKE_PROVENANCE
    from lymphocytosis.contract.store import PatientBag, write_bag

    bag = PatientBag("P1", "trainset", np.random.default_rng(0).normal(size=(3, 4)), ["a.jpg", "b.jpg", "c.jpg"])
    with h5py.File(tmp_path / "a.h5", "w") as a, h5py.File(tmp_path / "b.h5", "w") as b:
        write_bag(a.create_group("P1"), bag, 4, "float32")
        write_bag(b.create_group("P1"), bag, 4, "float32", FAKE_PROVENANCE)
        assert a["P1/embeddings"][()].tobytes() == b["P1/embeddings"][()].tobytes()
        assert set(b["P1"].attrs) - set(a["P1"].attrs) == {"content_sha256"}


# --- numbers and secrets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["12_11", "１２", "1.2.3", "--5", "5e", "0x10", "inf", "nan", "٣", "1 5", "+"])
def test_lymph_count_is_plain_decimal_only(tmp_path, value):
    from lymphocytosis.model.clinical import read_clinical

    h5 = write_fake_embeddings(tmp_path)
    csv = tmp_path / "dlmi" / "trainset" / "trainset_true.csv"
    lines = csv.read_text().splitlines()
    fields = lines[3].split(",")
    lines[3] = ",".join([*fields[:4], value])
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"trainset_true.csv row 4, patient F2, column LYMPH_COUNT: .* is not a "
                                         r"decimal number"):
        read_clinical(tmp_path / "dlmi")
    assert h5.is_file()


@pytest.mark.parametrize("text", ["1", "-2", "+3.5", ".5", "5.", "1e3", "2.5E-2"])
def test_plain_decimals_are_read(text):
    from lymphocytosis.contract.numbers import parse_decimal

    assert parse_decimal(text) == float(text)


def test_fullwidth_digits_in_a_date_are_refused():
    from lymphocytosis.model.clinical import parse_dob

    with pytest.raises(ValueError, match="is not M/D/YYYY"):
        parse_dob("１/２/１９５０")


@pytest.mark.parametrize("url, secret", [
    ("postgresql://tuner@db/lymph?password=s3cr3t-pw&sslmode=require", "s3cr3t-pw"),
    ("postgresql://tuner:p%40ss-word@db/lymph", "p@ss-word"),
    ("postgresql://db/lymph?user=t&sslpassword=keypass1", "keypass1"),
    ("postgresql://db/lymph?token=abc.def.ghi", "abc.def.ghi"),
])
def test_every_secret_of_a_storage_url_is_masked(url, secret):
    from lymphocytosis.passwords import masked

    shown = masked(f"--storage {url}: cannot connect", url)
    assert secret not in shown and "***" in shown
    assert secret not in masked(f"FATAL: password {secret} rejected")  # remembered, wherever it turns up later


def test_a_full_disk_while_writing_thumbnails_is_blamed_on_the_disk(tmp_path, monkeypatch):
    """Not "N cell images could not be read": the images are fine, the disk is not."""
    import errno

    from PIL import Image

    from lymphocytosis.report.thumbnails import write_thumbnail

    source = tmp_path / "cell.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(source)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(InputError, match=r"top1.jpg: cannot write: the disk is full"):
        write_thumbnail(source, tmp_path / "report" / "top1.jpg", 224, 112)
    monkeypatch.undo()
    assert write_thumbnail(tmp_path / "missing.png", tmp_path / "t.jpg", 224, 112) == "image file missing"


@pytest.mark.parametrize("header, own", [
    ("ID,LABEL,PROBABILITY", True),
    ("ID,LABEL,PROBABILITY,EVIDENCE", True),
    ("ID,LABEL,PROBABILITY,OPERATING_POINT,EVIDENCE", True),
    ("ID,LABEL,PROBABILITY,RECALIBRATED_PROBABILITY,OPERATING_POINT,EVIDENCE", True),
    ("ID,LABEL", False),
    ("ID,LABEL,PROBABILITYX", False),
    ("Id,Predicted", False),
])
def test_predictions_file_recognised_by_its_header(tmp_path, header, own):
    from lymphocytosis.output_kinds import is_predictions

    path = tmp_path / "p.csv"
    path.write_text(f"{header}\nP1,1,0.9\n", encoding="utf-8")
    assert is_predictions(path) is own
