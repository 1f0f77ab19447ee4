"""Several extract.py processes on one output (one per GPU, or a Slurm array): real concurrent processes share
the patients, every one exits 0, the result equals a single process's, and a worker killed with SIGKILL leaves
its patients to the others. Plus the claims themselves, and --device cuda:K.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import extract as extract_cli
from conftest import REPO, SMALL_CLI_ARGS, assert_one_line_error, run_main, small_settings, subprocess_env, write_dataset
from lymphocytosis.contract.store import load_bags, read_provenance
from lymphocytosis.errors import InputError
from lymphocytosis.extract.extraction import extract
from lymphocytosis.extract.workers import Claims, Heartbeat, alive, local_identity, safe_name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, synthetic_cell_images) -> Path:
    """12 patients of 10 cells: enough work to share."""
    pool = synthetic_cell_images
    patients = {f"W{i}": [(f"{k:06d}.jpg", pool[(i * 5 + k) % len(pool)]) for k in range(10)] for i in range(12)}
    return write_dataset(tmp_path_factory.mktemp("workers") / "dlmi", {"trainset": patients})


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "single.h5"
    extract(dataset, out, small_settings())
    return load_bags(out)[1]


def start(dataset: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, str(REPO / "extract.py"), "--root", str(dataset), "--out", str(out),
                                 *SMALL_CLI_ARGS], cwd=REPO, env={**subprocess_env(), "LYMPHOCYTOSIS_PROGRESS": "always"},
                                stdout=handle, stderr=subprocess.STDOUT)


def assert_same_as_single_process(out: Path, reference: dict) -> None:
    bags = load_bags(out)[1]
    assert list(bags) == list(reference)
    for patient, bag in reference.items():
        assert bags[patient].filenames == bag.filenames
        assert np.array_equal(bags[patient].embeddings, bag.embeddings), f"{patient} differs from a single-process run"
    assert not Path(f"{out}.parts").exists() and not list(out.parent.glob(f".{out.name}.*"))


def test_two_workers_started_together_share_the_work(dataset, reference, tmp_path):
    out = tmp_path / "shared.h5"
    workers = [start(dataset, out, tmp_path / f"w{k}.log") for k in range(2)]
    codes = [w.wait(timeout=600) for w in workers]
    logs = [(tmp_path / f"w{k}.log").read_text() for k in range(2)]
    assert codes == [0, 0], logs
    assert_same_as_single_process(out, reference)
    embedded = [int(log.split("this worker embedded ")[1].split()[0]) for log in logs]
    # Together all of it, each image once. Not asserted: that both did some, which depends on how fast each
    # started (the killed-worker test below has workers that must share).
    assert sum(embedded) == 120, embedded
    # Each progress bar counts the whole dataset. A worker that starts after the other finished has nothing to do
    # and shows no bar ("already complete"): it happened in a clean-clone CI run.
    working = [log for log in logs if "already complete" not in log]
    assert working and all("/120" in log for log in working)


def test_a_killed_worker_leaves_its_patients_to_the_others(dataset, reference, tmp_path):
    out = tmp_path / "killed.h5"
    parts = Path(f"{out}.parts")
    # The victim starts alone, so it is sure to hold a claim when it is killed (started together, the others may
    # take every patient before the victim's start-up is over); the others start as it is killed.
    victim = start(dataset, out, tmp_path / "w0.log")
    deadline = time.monotonic() + 300
    while not victim_claims(parts, victim.pid):
        assert time.monotonic() < deadline and victim.poll() is None, "the first worker never claimed a patient"
        time.sleep(0.01)
    others = [start(dataset, out, tmp_path / f"w{k}.log") for k in (1, 2)]
    victim.send_signal(signal.SIGKILL)
    workers = [victim, *others]
    codes = [w.wait(timeout=600) for w in workers]
    assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0], [(tmp_path / f"w{k}.log").read_text() for k in range(3)]
    logs = [(tmp_path / f"w{k}.log").read_text() for k in (1, 2)]
    assert any("which stopped" in log and f":{victim.pid}" in log for log in logs), logs  # its claim taken over
    assert_same_as_single_process(out, reference)


def victim_claims(parts: Path, pid: int) -> list[Path]:
    found = []
    for claim in parts.glob("*.claim"):
        try:
            if claim.read_text().endswith(f":{pid}"):
                found.append(claim)
        except FileNotFoundError:
            pass
    return found


def test_a_late_worker_finds_the_work_done(dataset, reference, tmp_path):
    out = tmp_path / "late.h5"
    assert run_main(extract_cli.main, ["--root", str(dataset), "--out", str(out), *SMALL_CLI_ARGS]).code == 0
    before = out.stat().st_mtime_ns
    result = run_main(extract_cli.main, ["--root", str(dataset), "--out", str(out), *SMALL_CLI_ARGS])
    assert result.code == 0 and out.stat().st_mtime_ns == before
    assert read_provenance(out)["n_images"] == 120


# --- claims -----------------------------------------------------------------------------------------------------------


def test_claims_are_exclusive_and_taken_over_only_from_stopped_workers(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    mine, other = Claims(folder, "thishost:1"), Claims(folder, f"{os.uname().nodename}:{os.getpid()}")
    with Heartbeat(folder, other.worker):
        assert other.take("P1") and other.holder("P1") == other.worker
        assert not mine.take("P1")  # a live worker's claim (its pid exists here, its heartbeat is fresh)
        assert mine.held_elsewhere("P1") is False or mine.holder("P1") == other.worker
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = Claims(folder, f"{local_identity()}:{int(dead.stdout)}")  # a process of this host and namespace that exited
    assert gone.take("P2")
    assert mine.take("P2") and mine.holder("P2") == "thishost:1"  # taken over at once: its pid is gone
    assert not list(folder.glob("*.stale-*"))
    remote = Claims(folder, "another-host:77")  # no heartbeat file at all: stopped
    assert remote.take("P3") and mine.take("P3")


def test_a_pid_in_another_pid_namespace_is_judged_by_its_heartbeat_only(tmp_path):
    """Two containers on one host: the same host name, separate pid tables. A pid that does not exist here says
    nothing about a worker in the other container; only its heartbeat does."""
    heartbeats = tmp_path / "workers"
    heartbeats.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    container = f"{os.uname().nodename}@4026530000:{int(dead.stdout)}"
    (heartbeats / safe_name(container)).touch()
    assert alive(container, heartbeats)  # its heartbeat is fresh: alive, whatever this pid table says
    here = f"{local_identity()}:{int(dead.stdout)}"
    (heartbeats / safe_name(here)).touch()
    assert not alive(here, heartbeats)  # same host and namespace: the pid is known to be gone
    old = time.time() - 3600
    os.utime(heartbeats / safe_name(container), (old, old))
    assert not alive(container, heartbeats)


def test_a_worker_resumed_after_the_others_finished_exits_cleanly(tmp_path):
    """Paused past the heartbeat timeout, its patients were taken over and the final file written: finishing is
    reading that file's totals, not an error."""
    from types import SimpleNamespace

    from conftest import FAKE_PROVENANCE, write_fake_embeddings
    from lymphocytosis.contract.store import PatientBag
    from lymphocytosis.extract.job import finish
    from lymphocytosis.extract.parts import PartsFolder, PartsRemoved

    out = write_fake_embeddings(tmp_path)
    parts = PartsFolder(tmp_path / "other.h5", FAKE_PROVENANCE, 16, tmp_path)
    parts.discard()  # the last worker assembled the file and removed the parts folder
    with pytest.raises(PartsRemoved):
        parts.write(PatientBag("F0", "trainset", np.zeros((0, 16)), []))
    job = SimpleNamespace(parts=parts, claims=None, plan=None)
    totals = finish(job, out, None, 16, FAKE_PROVENANCE, {})
    assert totals == {"n_patients": 28, "n_images": totals["n_images"], "n_skipped": 0}
    with pytest.raises(InputError, match="replaced by an extraction of other settings"):
        finish(job, out, None, 16, {**FAKE_PROVENANCE, "tta": "dihedral8"}, {})


def test_device_index_beyond_this_machine():
    result = run_main(extract_cli.main, ["--device", "cuda:7", "--root", "nowhere"])
    assert result.code == 2 and "Traceback" not in result.stderr
    assert_one_line_error(result, "nowhere")  # the dataset is checked first; the device next (below)


@pytest.mark.parametrize("device, fragment", [("cuda:7", "--device cuda:7"), ("gpu", "expected auto, cpu, cuda or cuda:K")])
def test_device_names(device, fragment, tmp_path, dataset):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 or more GPUs")
    result = run_main(extract_cli.main, ["--root", str(dataset), "--out", str(tmp_path / "e.h5"), "--device", device])
    assert_one_line_error(result, fragment)


def test_decoding_processes_share_the_patients(dataset, reference, tmp_path, caplog):
    """--workers 2: two decoding processes under one worker id; each patient decoded and embedded once."""
    import logging

    out = tmp_path / "decoders.h5"
    with caplog.at_level(logging.INFO):
        result = run_main(extract_cli.main, ["--root", str(dataset), "--out", str(out), *SMALL_CLI_ARGS[:-4],
                                             "--workers", "2", "--device", "cpu"])
    assert result.code == 0, result.stderr
    assert "this worker embedded 120 images" in caplog.text
    assert_same_as_single_process(out, reference)


def test_an_empty_claim_is_judged_once_old(tmp_path):
    """A claim file left empty (a writer killed at the wrong moment) does not block the patient forever."""
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "P1.claim").write_text("")
    mine = Claims(folder, "thishost:1")
    assert not mine.take("P1")  # fresh: maybe being written
    old = time.time() - 3600
    os.utime(folder / "P1.claim", (old, old))
    assert mine.take("P1") and mine.holder("P1") == "thishost:1"


def test_overwrite_never_discards_a_running_extraction(dataset, tmp_path):
    """Another run with other settings whose heartbeat is fresh: refused even with --overwrite, parts kept."""
    from lymphocytosis.extract.parts import PartsFolder

    out = tmp_path / "busy.h5"
    parts = PartsFolder(out, {"model": "other", "dtype": "float32"}, 8, dataset)
    (parts.path / "workers").mkdir()
    (parts.path / "workers" / "otherhost_1").touch()
    result = run_main(extract_cli.main, ["--root", str(dataset), "--out", str(out), *SMALL_CLI_ARGS, "--overwrite"])
    assert_one_line_error(result, "is running here", "heartbeat is fresh")
    assert (parts.path / "settings.json").is_file()
