"""Files that are either absent, the old version, or the complete new version: never half-written.

Every file the tool writes goes to a unique temporary name in the target's own folder (so two writers never
share a temporary file, and the rename stays on one filesystem), is flushed to disk, then renamed over the
target, which POSIX makes atomic: a reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def temporary_sibling(path: Path) -> Path:
    """A new, unique, empty file beside `path` (hidden, `.tmp` suffix), for a writer to fill then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, document) -> None:
    atomic_write_text(path, json.dumps(document, indent=1))


def replace_directory(new: Path, target: Path) -> None:
    """Put the complete folder `new` in place of `target` (removed after), never leaving a half-written one."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Yield a new temporary folder beside `target`; on success it replaces `target`, on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        replace_directory(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
