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


def _comparable(rows):
    return [(r.path, r.usable, r.reason, r.sha256, r.phash, r.phash_mirror, r.group, r.split, r.sharpness)
            for r in rows]


def test_a_killed_build_resumes_and_a_changed_folder_reinspects_only_what_changed(tmp_path, monkeypatch):
    """The inspection cache (path, size, modification time): an interrupted build keeps
    what it inspected, the next one inspects the rest; after two files change, a build
    inspects those two; every build gives the rows an uncached build gives."""
    import os

    import pytest

    from engine.data import manifest
    data = write_class_folders(tmp_path / "data", per_class=40)
    cache = tmp_path / "inspected.sqlite"
    reference, _ = build_manifest(str(data), cache=None)
    calls = []
    inspect = manifest._inspect
    monkeypatch.setattr(manifest, "_inspect", lambda *a: calls.append(a[0].path) or inspect(*a))

    def killed(done, total):
        raise KeyboardInterrupt  # as a Ctrl-C after the first chunk of files

    with pytest.raises(KeyboardInterrupt):
        build_manifest(str(data), cache=cache, progress=killed)
    calls.clear()
    resumed, _ = build_manifest(str(data), cache=cache)
    # The first chunk was recorded before the stop; the rest is inspected now.
    assert len(calls) == 80 - manifest.INSPECT_CHUNK
    assert _comparable(resumed) == _comparable(reference)
    calls.clear()
    assert _comparable(build_manifest(str(data), cache=cache)[0]) == _comparable(reference)
    assert calls == []  # nothing changed: nothing decoded
    changed = sorted((data / "yes").iterdir())[:2]
    for path in changed:
        path.write_bytes((data / "no" / sorted(os.listdir(data / "no"))[0]).read_bytes())
    rebuilt, _ = build_manifest(str(data), cache=cache)
    assert sorted(calls) == sorted(str(p) for p in changed)
    by_path = {r.path: r for r in rebuilt}
    assert by_path[str(changed[0])].sha256 != next(r for r in reference if r.path == str(changed[0])).sha256


def test_processes_and_threads_inspect_alike(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=40)
    threads, _ = build_manifest(str(data), cache=None, pool="threads")
    processes, _ = build_manifest(str(data), cache=None, pool="processes")
    assert _comparable(processes) == _comparable(threads)


def test_a_run_records_its_scan_progress_for_the_train_page(tmp_path):
    from engine import layout, runs
    from engine.config import tiny_config
    from engine.training.loop import prepare_data
    data = write_class_folders(tmp_path / "data", per_class=40)
    folder = tmp_path / "run"
    folder.mkdir()
    runs.write_status(folder, runs.RUNNING, phase=runs.PHASE_PREPARING)
    rows, _ = prepare_data(tiny_config(data_dir=str(data), dedup_distance=-1), folder, resume=False)
    status = runs.read_json(folder / layout.STATUS)
    assert status["files_found"] == status["files_inspected"] == 80 == len(rows)


def test_the_summary_says_how_contrast_copies_were_looked_for(tmp_path, monkeypatch):
    """Every pair below the exact limit, the index above it, and above the descriptor
    limit a skipped test the Data page can warn about (not a log line only)."""
    from engine.data import dedup
    root = write_class_folders(tmp_path / "d", per_class=8)
    _, summary = build_manifest(str(root), cache=None)
    assert summary["contrast_test"]["method"] == "exact"
    monkeypatch.setattr(dedup, "MAX_CORRELATION_IMAGES", 10)
    _, summary = build_manifest(str(root), cache=None)
    assert summary["contrast_test"]["method"] == "indexed"
    monkeypatch.setattr(dedup, "MAX_DESCRIBED_IMAGES", 10)
    _, summary = build_manifest(str(root), cache=None)
    assert summary["contrast_test"]["method"] == "skipped" and "16 images" in summary["contrast_test"]["note"]
    _, summary = build_manifest(str(root), cache=None, dedup_correlation=0.0)
    assert summary["contrast_test"]["method"] == "off"
