"""The one atomic writer (engine/files.py): a reader sees the old file or the new one,
never half of one, and a failed write leaves the old file and no temporary file."""

import json

import pytest

from engine.files import atomic_open, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half of a new fi")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_a_finished_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "status.json"
    write_json_atomic(target, {"state": "running"})
    write_json_atomic(target, {"state": "finished", "epoch": 3})
    assert json.loads(target.read_text()) == {"epoch": 3, "state": "finished"}
    with atomic_open(tmp_path / "blob.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "status.json"]
