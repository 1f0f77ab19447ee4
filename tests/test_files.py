"""Atomic writes: the target is the old version or the complete new one, and errors name the right file."""

from __future__ import annotations

import os

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
