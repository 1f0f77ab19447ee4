"""Shared fixtures: a tiny synthetic challenge-layout dataset, its embeddings, and helpers to build odd
datasets and to run a CLI `main(argv)` the way a user would.

`synthetic_root` and `synthetic_embeddings` are session-scoped and reused by the stage 1, stage 2 and report
tests: treat both as read-only (copy them to tmp_path before changing anything).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SYNTHETIC_N_TRAIN = 12
SYNTHETIC_N_TEST = 3
SYNTHETIC_CELLS = (3, 6)
SYNTHETIC_SEED = 0
CSV_HEADER = "ID,LABEL,GENDER,DOB,LYMPH_COUNT"

# torch's intra-op threads, in this process and in the CLIs the tests start. One thread: on a shared or
# small machine, OpenMP threads competing with other processes make CPU inference up to 100x slower, and a
# fixed count keeps in-process and subprocess embeddings bit-identical (the resume test compares them).
TORCH_THREADS = int(os.environ.get("TEST_TORCH_THREADS", "1"))


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(TORCH_THREADS),
            "MKL_NUM_THREADS": str(TORCH_THREADS)}


def pin_torch_threads() -> None:
    import torch

    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Pin torch's threads when torch is in use (stage 2 tests that never import torch do not pay for it)."""
    if "torch" in sys.modules:
        pin_torch_threads()
    yield


# The settings of `synthetic_embeddings`: small crop, CPU, no worker processes, so tests stay fast anywhere.
SMALL_SETTINGS_KWARGS = {
    "model": "tf_efficientnet_lite0", "weights": None, "crop": 64, "input_size": None, "tta": False, "precision": "fp32",
    "dtype": "float32", "batch_size": 8, "workers": 0, "device": "cpu", "views": False,
}
# The same settings as `extract.py` arguments. No training views (they double the time): tests of the views
# (test_training_views.py) ask for them.
SMALL_CLI_ARGS = ["--no-views", "--crop", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


def small_settings(**changes):
    """`ExtractSettings` of `synthetic_embeddings`, with `changes` (torch is imported only when needed)."""
    from lymphocytosis.extract.extraction import ExtractSettings

    return ExtractSettings(**{**SMALL_SETTINGS_KWARGS, **changes})


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (12 train + 3 test patients, 3-6 cells each). Read-only: do not modify."""
    from lymphocytosis.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic") / "dlmi"
    return make_synthetic_dataset(root, n_train=SYNTHETIC_N_TRAIN, n_test=SYNTHETIC_N_TEST,
                                  cells=SYNTHETIC_CELLS, seed=SYNTHETIC_SEED)


@pytest.fixture(scope="session")
def synthetic_embeddings(synthetic_root, tmp_path_factory) -> Path:
    """The .h5 of `synthetic_root` extracted once with SMALL_SETTINGS (crop 64, fp32, CPU). Read-only."""
    from lymphocytosis.extract.extraction import extract

    pin_torch_threads()
    out = tmp_path_factory.mktemp("embeddings") / "embeddings.h5"
    summary = extract(synthetic_root, out, small_settings())
    assert summary.n_patients == SYNTHETIC_N_TRAIN + SYNTHETIC_N_TEST, summary
    assert out.is_file() and not Path(f"{out}.parts").exists()
    return out


@pytest.fixture(scope="session")
def synthetic_cell_images(synthetic_root) -> list[Path]:
    """Every JPEG of `synthetic_root`, sorted: a pool to copy into purpose-built datasets."""
    images = sorted(synthetic_root.glob("*/*/*.jpg"))
    assert len(images) >= 20
    return images


def write_dataset(root: Path, splits: dict[str, dict[str, list]], make_folders: bool = True) -> Path:
    """Build a challenge-layout dataset by hand.

    `splits` maps "trainset"/"testset" to {patient_id: files}; each file is a Path (copied, keeping its
    name), a (name, Path) pair (copied under that name), a (name, bytes) pair (written), or a
    (name, PIL.Image) pair (saved). A patient whose value is None gets a CSV row but no folder."""
    from lymphocytosis.contract.layout import SPLIT_CSVS

    root = Path(root)
    for split, patients in splits.items():
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        lines = [CSV_HEADER]
        for i, (patient_id, files) in enumerate(patients.items()):
            label = (i % 2) if split == "trainset" else -1
            lines.append(f"{patient_id},{label},{'MF'[i % 2]},1/2/{1940 + i},{5 + i}.5")
            if files is None or not make_folders:
                continue
            folder = split_dir / patient_id
            folder.mkdir(parents=True, exist_ok=True)
            for item in files:
                if isinstance(item, Path):
                    shutil.copyfile(item, folder / item.name)
                    continue
                name, content = item
                if isinstance(content, Path):
                    shutil.copyfile(content, folder / name)
                elif isinstance(content, bytes):
                    (folder / name).write_bytes(content)
                else:
                    content.save(folder / name)
        (split_dir / SPLIT_CSVS[split]).write_text("\n".join(lines) + "\n")
    return root


def flatten_cv(cv_dir: Path) -> Path:
    """Move the one per-settings results folder of `cv_dir` up into `cv_dir` itself (the plain layout, which is
    still read): tests that damage cv.json then find it at `cv_dir/cv.json`."""
    (folder,) = [p for p in Path(cv_dir).iterdir() if p.is_dir()]
    for item in folder.iterdir():
        item.rename(Path(cv_dir) / item.name)
    folder.rmdir()
    return Path(cv_dir)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_main(main, argv: list[str]) -> CliResult:
    """Call a `cli_main`-wrapped `main(argv)` in-process, capturing its exit code, stdout and stderr.

    A SystemExit (argparse errors, `--help`) becomes its code; any other exception propagates, so a
    traceback fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())


@pytest.fixture
def run_cli():
    """`run_cli(main, argv) -> CliResult` (see run_main)."""
    return run_main


def assert_one_line_error(result: CliResult, *fragments: str, exact_one_line: bool = False) -> str:
    """Exit code 2, exactly one `error: ...` line containing every fragment, and no traceback."""
    assert result.code == 2, f"exit code {result.code}; stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    if exact_one_line:
        assert result.stderr.strip() == line, f"more than the error line on stderr:\n{result.stderr}"
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def python_cli(script: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the repository root, as a user would."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, **kwargs)


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "call"):
    """Fail instead of hanging (e.g. a lock taken without LOCK_NB); main thread only, uses SIGALRM."""
    import signal

    def expire(signum, frame):
        raise TimeoutError(f"{what} still running after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- Stage 2 helpers: hand-made embeddings files (no torch, no images), so model/tuning tests stay fast. ---

FAKE_PROVENANCE = {
    "model": "fake-backbone", "weights_source": "tests", "weights_sha256": "0" * 64, "features": "pooled",
    "preprocessing": '{"crop": 64, "input_size": 64}', "tta": "none", "precision": "fp32", "dtype": "float32",
}


def fake_label(i: int) -> int:
    """Training patient i's label in `write_fake_embeddings`: 2/3 tumoral, as in the challenge."""
    return int(i % 3 != 2)


def write_fake_embeddings(base: Path, n_train: int = 24, n_test: int = 4, dim: int = 16, cells: tuple = (2, 6),
                          empty: tuple = (), seed: int = 0, provenance: dict | None = None, train_prefix: str = "F") -> Path:
    """Write `base/dlmi` (the two CSVs only, no image folders) and `base/embeddings.h5` in the format of
    extract.py, through the store's own writer; return the .h5 path.

    Training patients are F0..F{n_train-1} (or `train_prefix`..., labels from `fake_label`), test patients T0..; IDs in `empty`
    get 0 cells. Cells carry some signal (a shift in the first dimensions for tumoral patients), and so do
    age and lymphocyte count; every cell row is distinct."""
    import numpy as np

    from lymphocytosis.contract.layout import discover_patients
    from lymphocytosis.contract.store import PatientBag
    from lymphocytosis.extract.parts import assemble

    base = Path(base)
    root = base / "dlmi"
    rng = np.random.default_rng(seed)
    provenance = {**FAKE_PROVENANCE, **(provenance or {})}
    bags = {}
    for split, csv_name, prefix, count in (("trainset", "trainset_true.csv", train_prefix, n_train),
                                            ("testset", "testset_data.csv", "T", n_test)):
        lines = [CSV_HEADER]
        for i in range(count):
            patient_id = f"{prefix}{i}"
            tumoral = fake_label(i) if split == "trainset" else int(rng.integers(2))
            label = tumoral if split == "trainset" else -1
            year = int(1945 - 10 * tumoral + rng.integers(-8, 9))
            lymph = float(np.exp(rng.normal(2.4 if tumoral else 1.7, 0.7)))
            dob = f"{int(rng.integers(1, 13))}/{int(rng.integers(1, 29))}/{year}"
            lines.append(f"{patient_id},{label},{'MF'[int(rng.integers(2))]},{dob},{lymph:.2f}")
            n_cells = 0 if patient_id in empty else int(rng.integers(cells[0], cells[1] + 1))
            x = rng.normal(0.0, 1.0, (n_cells, dim)).astype(np.float32)
            x[:, :3] += 0.8 * tumoral
            bags[patient_id] = PatientBag(patient_id, split, x, [f"{k:06d}.jpg" for k in range(n_cells)], [],
                                          "no images" if n_cells == 0 else "", listing_sha256="0" * 64)
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / csv_name).write_text("\n".join(lines) + "\n")
    for entry in discover_patients(root):  # the CSV rows as extract.py records them
        bags[entry.patient_id].row_sha256 = entry.row_sha256
    out = base / "embeddings.h5"
    assemble(out, list(bags), bags.__getitem__, dim, provenance, {"dataset_root": str(root.resolve()), "tool_version": "tests"})
    return out


@pytest.fixture(scope="session")
def fake_embeddings(tmp_path_factory) -> Path:
    """`write_fake_embeddings` with its defaults (24 train + 4 test patients, 16 dimensions). Read-only."""
    return write_fake_embeddings(tmp_path_factory.mktemp("fake"))


# --- A real PostgreSQL server for the tuning-workers tests (tests/postgres.py) ---


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port, password authentication; stopped at the end.
    Skips where the server binaries are missing, except in CI (CI=true), where these tests must run."""
    from postgres import INSTALL_HINT, server_bin_dir, start_server

    if server_bin_dir() is None:
        message = f"PostgreSQL server binaries (initdb, pg_ctl) not found; to run these tests: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (.ci/run installs it)")
        pytest.skip(message)
    server = start_server()
    yield server
    server.stop()


SMALL = {"min_data_in_leaf": 2, "num_iterations": 30, "n_models": 2}  # lets trees split on the fake 24 patients


def write_small_params(path: Path, embeddings: Path) -> Path:
    """A parameters file (tune.py's format) for `embeddings` with SMALL's settings: a model that separates the
    fake patients in a second, without tuning."""
    from lymphocytosis.model.cohort import load_cohort
    from lymphocytosis.model.tuned_params import Settings, save_settings

    save_settings(path, Settings(params={**Settings().params, **SMALL}), load_cohort(embeddings), {"trial": 0})
    return path


def fitted_small_model(base: Path) -> Path:
    """In `base`: fake embeddings (24 + 4 patients), SMALL's parameters file (params.json) and the model fitted on
    them (model/); returns `base`."""
    import model as model_cli

    embeddings = write_fake_embeddings(base)
    write_small_params(base / "params.json", embeddings)
    result = run_main(model_cli.main, ["fit", "--embeddings", str(embeddings), "--params", str(base / "params.json"),
                                       "--model-dir", str(base / "model")])
    assert result.code == 0, result.stderr
    return base
