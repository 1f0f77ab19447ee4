"""Files that are either absent, the old version, or the complete new version: never half-written.

Every file the tool writes goes to a unique temporary name in the target's own folder (so two writers never
share a temporary file, and the rename stays on one filesystem), is flushed to disk, then renamed over the
target, which POSIX makes atomic: a reader sees the old file or the new one, never a mix. A write that fails
(disk full, read-only folder) removes its temporary file and stops with one line naming the target.
HDF5 files are written through a Python file object: HDF5's own I/O layer crashed the process on a full
disk (segmentation fault), Python's raises a clean OSError.

Ownership: an output path is written only when it does not exist or is a regular file the tool recognises as
its own kind (`require_own_file`), never a device, FIFO, socket, folder or symbolic link (`atomic_output`
refuses those for every file it writes). A folder output is replaced whole only when everything in it is
listed in the manifest the tool wrote there (`require_own_folder`), otherwise refused naming the foreign
entries. Temporary files and folders are locked (flock) while in use, so the next run removes those an
interrupted one left behind (`remove_stale_temporaries`) and never one a live run is filling.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def cannot_write(path: Path, exc: OSError) -> InputError:
    if exc.errno == errno.ENOSPC:
        return InputError(f"{path}: cannot write: the disk is full (No space left on device)")
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


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def existing_mode(path: Path) -> int | None:
    """The target's own mode (a link's, not its target's), None when nothing is there."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise cannot_write(Path(path), exc) from None


def refuse_special(path: Path, option: str = "") -> None:
    """Never replace a device, FIFO, socket, folder or symbolic link by a regular file."""
    mode = existing_mode(path)
    if mode is not None and not stat.S_ISREG(mode):
        where = f"{option} {path}" if option else str(path)
        raise InputError(f"{where}: is {kind_of(mode)}; this tool writes only new files or regular files of its own")


@contextlib.contextmanager
def locked_temporary(path: Path, folder: bool = False):
    """A new, unique temporary file (or folder) beside `path`, `.<name>.*.tmp`, already locked when it gets that
    name: it is made as `.<name>.*.new`, locked, then renamed, so `remove_stale_temporaries` of a concurrent
    writer (another tune worker saving the same best-params file) never takes it for a killed run's leftover."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            new = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
        else:
            handle, new = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
            os.close(handle)
        fd = os.open(new, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this name yet: never refused
        tmp = Path(new[: -len(".new")] + ".tmp")
        os.rename(new, tmp)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    try:
        yield tmp
    finally:
        os.close(fd)


@contextlib.contextmanager
def held_lock(path: Path):
    """An exclusive flock on `path` (a file or a folder) for as long as the block runs: the mark of a live writer."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        fd = None
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove what interrupted writers of `target` left beside it (`.<name>.*.tmp`, `.<name>.old-*`): only those
    no live process holds locked. Returns what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for pattern in (f".{target.name}.*.tmp", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            try:
                fd = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer's
            finally:
                os.close(fd)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a unique temporary path beside `path`; on success it is synced and renamed over `path`, on
    failure removed, so an interrupted writer leaves the previous file (or none) in place."""
    path = Path(path)
    refuse_special(path)
    remove_stale_temporaries(path)
    with locked_temporary(path) as tmp:
        try:
            yield tmp
            fsync_file(tmp)
            refuse_special(path)
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
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    with held_lock(old):
        os.replace(target, old / target.name)
        try:
            os.replace(new, target)
        except OSError:
            os.replace(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)


MANIFEST = ".lymphocytosis-manifest.json"  # in every folder the tool replaces whole: what it wrote there
MANIFEST_FORMAT = "lymphocytosis-folder/1"


def folder_entries(directory: Path) -> dict[str, str]:
    """Every entry under `directory` (links not followed), by relative path: "d" folder, "f" file, "x" other."""
    entries = {}
    for current, folders, files in os.walk(directory):
        base = Path(current).relative_to(directory)
        for name in folders + files:
            path = Path(current) / name
            mode = os.lstat(path).st_mode
            kind = "d" if stat.S_ISDIR(mode) else "f" if stat.S_ISREG(mode) else "x"
            entries[(base / name).as_posix()] = kind
    entries.pop(MANIFEST, None)
    return entries


def write_manifest(directory: Path, kind: str) -> None:
    document = {"format": MANIFEST_FORMAT, "kind": kind, "entries": folder_entries(directory)}
    (Path(directory) / MANIFEST).write_text(json.dumps(document, indent=0, sort_keys=True), encoding="utf-8")


def read_manifest(directory: Path, kind: str) -> dict[str, str] | None:
    """The entries the tool recorded writing in `directory` as a `kind` folder; None without a valid manifest."""
    try:
        document = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not (isinstance(document, dict) and document.get("format") == MANIFEST_FORMAT and document.get("kind") == kind
            and isinstance(document.get("entries"), dict)):
        return None
    return document["entries"]


def matches_pattern(relative: str, pattern: str) -> bool:
    parts, globs = relative.split("/"), pattern.split("/")
    return len(parts) == len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs))


def foreign_entries(directory: Path, kind: str, legacy: tuple[str, ...] = ()) -> list[str]:
    """What in `directory` the tool did not write: entries missing from its manifest (or of another type than
    recorded); in a folder without a manifest (written before manifests existed), whatever matches none of the
    `legacy` patterns of that kind of folder, everything when there are none."""
    entries = folder_entries(directory)
    recorded = read_manifest(directory, kind)
    if recorded is not None:
        return sorted(e for e, t in entries.items() if recorded.get(e) != t or t == "x")
    return sorted(e for e, t in entries.items() if t == "x" or not any(matches_pattern(e, g) for g in legacy))


def require_own_folder(option: str, directory: Path, kind: str, legacy: tuple[str, ...] = ()) -> None:
    """A folder output is replaced whole only when new, empty, or holding nothing but what the tool wrote there."""
    directory = Path(directory)
    mode = existing_mode(directory)
    if mode is None:
        return
    if not stat.S_ISDIR(mode):
        raise InputError(f"{option} {directory}: exists and is {kind_of(mode)}, not a folder of this tool; "
                         "choose another path")
    foreign = foreign_entries(directory, kind, legacy)
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise InputError(f"{option} {directory}: holds other files than this tool wrote there ({', '.join(foreign[:5])}"
                         f"{more}); it would replace the folder whole, so it is refused: move them away or choose "
                         "another folder")


@contextlib.contextmanager
def atomic_directory(target: Path, kind: str | None = None):
    """Yield a new temporary folder beside `target`; on success it replaces `target`, on failure it is removed.
    With `kind`, the folder gets the manifest of what was written in it. Callers check first that `target` is
    theirs to replace (see `require_own_folder`: results.check_results_dir, report's prepare_out_dir,
    persistence.check_model_dir)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
    except OSError as exc:
        raise cannot_write(target, exc) from None
    with locked_temporary(target, folder=True) as tmp:
        try:
            yield tmp
            if kind:
                write_manifest(tmp, kind)
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


def first_line(path: Path, limit: int = 65536) -> str | None:
    """The file's first line (at most `limit` bytes read), None when it is not UTF-8 text."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(limit)
        return head.decode("utf-8-sig").splitlines()[0].strip() if head else ""
    except (OSError, UnicodeDecodeError, IndexError):
        return None


def require_own_file(option: str, path: Path, what: str, recognise: Callable[[Path], bool]) -> None:
    """An output file is written only where nothing is, or over a regular file the tool recognises as `what` (an
    empty file holds nothing to lose); never over a device, FIFO, socket, folder or symbolic link."""
    path = Path(path)
    refuse_special(path, option)
    if existing_mode(path) is None or os.path.getsize(path) == 0:
        return
    if not recognise(path):
        raise InputError(f"{option} {path}: exists and is not {what} written by this tool; it is left untouched: "
                         "choose a new path, or remove it first")
