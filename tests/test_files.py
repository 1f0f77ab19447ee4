"""Atomic writes: the target is the old version or the complete new one, and errors name the right file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lymphocytosis.errors import InputError
from lymphocytosis.files import atomic_directory, atomic_output, atomic_write_text, replace_directory


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_an_input_that_cannot_be_read_is_named_not_the_output(tmp_path):
    target, missing = tmp_path / "out.txt", tmp_path / "input.csv"
    with pytest.raises(InputError) as error, atomic_output(target) as tmp:
        tmp.write_text(missing.read_text())
    assert str(error.value).startswith(f"{missing}: ") and "while writing" in str(error.value)
    with pytest.raises(InputError, match=r"out\.txt: cannot write"), atomic_output(target) as tmp:
        raise OSError(28, "No space left on device")  # as a full disk reports it: no file name


def test_replace_directory_puts_the_old_folder_back_when_the_new_one_cannot_take_its_place(tmp_path):
    target = tmp_path / "report"
    target.mkdir()
    (target / "index.html").write_text("old")
    with pytest.raises(OSError):
        replace_directory(tmp_path / "does-not-exist", target)
    assert (target / "index.html").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["report"]
    with atomic_directory(target) as tmp:
        (tmp / "index.html").write_text("new")
    assert (target / "index.html").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["report"]


def test_a_temporary_is_locked_before_it_bears_a_name_a_cleaner_looks_for(tmp_path, monkeypatch):
    """Two tune workers save one best-params file: one's clean-up must never remove the other's temporary. The
    file is made as `.new`, locked, then renamed `.tmp`: a cleaner running at any moment finds it locked."""
    from lymphocytosis import files

    target = tmp_path / "best.json"
    seen = []
    rename = os.rename

    def rename_then_clean(source, destination):
        rename(source, destination)
        seen.append((Path(destination).name, files.remove_stale_temporaries(target)))  # a rival's clean-up, now

    monkeypatch.setattr(files.os, "rename", rename_then_clean)
    files.atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and len(seen) == 1 and seen[0][0].endswith(".tmp") and seen[0][1] == []
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]
