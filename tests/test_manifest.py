import csv

from conftest import write_class_folders
from engine.data.manifest import build_manifest, read_manifest, write_manifest


def test_broken_empty_and_non_image_files_are_skipped_with_reason(tmp_path):
    root = write_class_folders(tmp_path / "data", per_class=6)
    (root / "yes" / "empty.png").write_bytes(b"")
    (root / "yes" / "notes.jpg").write_text("not an image")
    good = (root / "no" / "no_0.png").read_bytes()
    (root / "no" / "truncated.png").write_bytes(good[:60])
    rows, summary = build_manifest(str(root), seed=1)
    skipped = {r.path.split("/")[-1]: r.reason for r in rows if not r.usable}
    assert set(skipped) == {"empty.png", "notes.jpg", "truncated.png"}
    assert "empty" in skipped["empty.png"]
    assert "not a recognised image" in skipped["notes.jpg"]
    assert summary["files_skipped"] == 3 and summary["images"] == 12
    assert all(r.split == "" for r in rows if not r.usable)
    assert all(r.split in ("train", "val", "test") for r in rows if r.usable)


def test_manifest_round_trips_through_csv(tmp_path):
    rows, _ = build_manifest(str(write_class_folders(tmp_path / "d", per_class=5)))
    path = tmp_path / "manifest.csv"
    write_manifest(rows, path)
    assert read_manifest(path) == rows
    with open(path) as handle:
        header = next(csv.reader(handle))
    for column in ("path", "label", "modality", "split", "sha256", "group", "reason"):
        assert column in header
