"""Atomic file writes leave the old file or the new one, and no temporary file."""
from __future__ import annotations

import pytest

from batch_scoring.scoring.atomic import write_atomic


def test_write_atomic_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "f.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
