"""Data health (engine.data.health, python -m engine.health) on a folder of real Br35H
slices with one planted problem of each kind."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from engine.data import health
from engine.data.imageio import decode_rgb
from engine.data.sources import default_data_dir

ROOT = Path(__file__).resolve().parent.parent


def _slice(name: str) -> Image.Image:
    return Image.fromarray(decode_rgb((default_data_dir() / name).read_bytes()))


def _planted_folder(root: Path) -> dict[str, str]:
    """12 clean slices per class, then one file per issue; returns file -> planted issue."""
    for label, prefix, numbers in (("yes", "y", range(100, 112)), ("no", "no", range(100, 112))):
        (root / label).mkdir(parents=True)
        for n in numbers:
            _slice(f"{label}/{prefix}{n}.jpg").save(root / label / f"{prefix}{n}.png")
    base = _slice("yes/y200.jpg")
    gray = np.asarray(base.convert("L"), np.float32)
    planted = {
        "no/flat.png": ("near_constant", Image.fromarray(np.full((200, 200), 120, np.uint8))),
        "yes/dark.png": ("dark", Image.fromarray((gray * 0.08).astype(np.uint8))),
        "yes/bright.png": ("bright", Image.fromarray((255 - gray * 0.4).astype(np.uint8))),
        "yes/blurred.png": ("blurry", base.filter(ImageFilter.GaussianBlur(8))),
        "no/tiny.png": ("small", _slice("no/no200.jpg").resize((48, 48))),
        "no/strip.png": ("odd_aspect", _slice("no/no201.jpg").resize((600, 200))),
        # the same slice filed under both labels: a copy cannot be both
        "no/relabelled_copy.png": ("conflicting_labels", _slice("yes/y105.jpg")),
    }
    for name, (_, image) in planted.items():
        image.save(root / name)
    (root / "yes" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    issues = {name: issue for name, (issue, _) in planted.items()}
    issues["yes/broken.jpg"] = "unreadable"
    return issues


def test_health_finds_each_planted_problem_and_few_on_clean_slices(tmp_path):
    planted = _planted_folder(tmp_path / "data")
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "engine.health", "--data-dir", str(tmp_path / "data"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(out / "data_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["path", "issue", "score", "group", "detail"]
    found = {}
    for row in rows:
        name = "/".join(Path(row["path"]).parts[-2:])
        found.setdefault(name, set()).add(row["issue"])
    for name, issue in planted.items():
        assert issue in found.get(name, set()), (name, issue, found.get(name))
    # Both members of the conflicting pair are flagged, in one group.
    conflicting = [r for r in rows if r["issue"] == "conflicting_labels"]
    assert {"/".join(Path(r["path"]).parts[-2:]) for r in conflicting} == {"no/relabelled_copy.png", "yes/y105.png"}
    assert len({r["group"] for r in conflicting}) == 1
    clean = [n for n in found if n not in planted]
    quality_flags = [(n, i) for n in clean for i in found[n] if i in health.DEFECTS]
    assert len(quality_flags) <= 1, quality_flags  # 24 clean slices: at most one false alarm
    report = json.loads((out / "data_health.json").read_text())
    assert report["usable"] == 24 + len(planted) - 1
    for issue in set(planted.values()):
        assert report["issues"][issue] >= 1
    assert report["class_balance"]["tumor"] + report["class_balance"]["no_tumor"] == report["usable"]
    assert report["leak_if_random_split"] is not None
    assert "duplicate_share" in report and report["width"]["min"] == 48


def test_quality_scores_do_not_read_a_contrast_change_as_blur():
    base = _slice("yes/y300.jpg")
    gray = np.asarray(base.convert("L"), np.float32)
    low_contrast = Image.fromarray((40 + gray * 0.3).astype(np.uint8))
    sharp = health.quality_scores(np.asarray(base.convert("RGB")))["sharpness"]
    faded = health.quality_scores(np.asarray(low_contrast.convert("RGB")))["sharpness"]
    blurred = health.quality_scores(np.asarray(base.filter(ImageFilter.GaussianBlur(8)).convert("RGB")))["sharpness"]
    assert abs(faded - sharp) < 0.25 * sharp
    assert blurred < health.BLUR_THRESHOLD < faded
