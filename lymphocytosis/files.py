"""Files that are either absent, the old version, or the complete new version: never half-written.

Every file the tool writes goes to a unique temporary name in the target's own folder (so two writers never
share a temporary file, and the rename stays on one filesystem), is flushed to disk, then renamed over the
target, which POSIX makes atomic: a reader sees the old file or the new one, never a mix. A write that fails
(disk full, read-only folder) removes its temporary file and stops with one line naming the target.
HDF5 files are written through a Python file object: HDF5's own I/O layer crashed the process on a full
disk (segmentation fault), Python's raises a clean OSError.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def cannot_write(path: Path, exc: OSError) -> InputError:
    return InputError(f"{path}: cannot write ({exc.strerror or exc})")


def write_error(path: Path, tmp: Path, exc: OSError) -> InputError:
    """The one-line error of a failed write: naming the target when the error is about it (or about no file, as a
    full disk is), and the file concerned otherwise (an input that could not be read while writing)."""
    concerned = exc.filename
    if concerned is None or same_path(concerned, tmp) or same_path(concerned, path):
        return cannot_write(path, exc)
    return InputError(f"{concerned}: {exc.strerror or exc} (while writing {path})")


def same_path(a, b) -> bool:
    return os.path.abspath(os.fsdecode(a)) == os.path.abspath(os.fsdecode(b))


def temporary_sibling(path: Path) -> Path:
    """A new, unique, empty file beside `path` (hidden, `.tmp` suffix), for a writer to fill then rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise cannot_write(path, exc) from None
    os.close(handle)
    return Path(name)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a unique temporary path beside `path`; on success it is synced and renamed over `path`, on
    failure removed, so an interrupted writer leaves the previous file (or none) in place."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, tmp, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_hdf5(path: Path):
    """An `h5py.File` open for writing on a temporary file that replaces `path` when complete."""
    import h5py

    with atomic_output(path) as tmp, open(tmp, "w+b") as handle, h5py.File(handle, "w") as hdf5:
        yield hdf5


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, document) -> None:
    atomic_write_text(path, json.dumps(document, indent=1, allow_nan=False))


def replace_directory(new: Path, target: Path) -> None:
    """Put the complete folder `new` in place of `target` (removed after), never leaving a half-written one: the
    old folder is moved aside first and moved back if the new one cannot take its place."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Yield a new temporary folder beside `target`; on success it replaces `target`, on failure it is removed.
    Callers check first that `target` is theirs to replace (results.check_results_dir, report's prepare_out_dir,
    persistence.check_model_dir)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as exc:
        raise cannot_write(target, exc) from None
    try:
        yield tmp
        replace_directory(tmp, target)
    except OSError as exc:
        raise write_error(target, tmp, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs_as_outputs(outputs: dict[str, Path | None], inputs: list[Path]) -> None:
    """No output may be, or (for a folder output) contain, one of the run's inputs: a typo in --out must not
    destroy the embeddings, a CSV or a model. `outputs` maps an option name to its path."""
    for option, output in outputs.items():
        if output is None:
            continue
        output = Path(output)
        for source in inputs:
            source = Path(source)
            inside = source.resolve().is_relative_to(output.resolve()) if output.is_dir() else False
            if same_file(output, source) or inside:
                what = "is" if same_file(output, source) else "contains"
                raise InputError(f"{option} {output}: {what} an input of this run ({source}); choose another path")
