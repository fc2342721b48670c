"""CI guard for the shipped model: it loads from checkpoints/ alone and its accuracy on
a fixed sample of the test split matches the model card."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, gradient_16bit

CHECKPOINTS = ROOT / "checkpoints"


@pytest.fixture(scope="module")
def card():
    return json.loads((CHECKPOINTS / "model_card.json").read_text())


def test_shipped_model_is_small_and_complete():
    size = sum(p.stat().st_size for p in (CHECKPOINTS / "export").rglob("*") if p.is_file())
    assert size < 30 * 1024 * 1024  # a fold ensemble may take up to 30 MB
    for name in ("model.json", "config.json", "manifest.csv", "README.md", "eval_test.json",
                 "cv_summary.json", "oof_predictions.csv", "label_issues.csv"):
        assert (CHECKPOINTS / name).exists(), name


def test_shipped_model_accuracy_on_a_fixed_test_sample_matches_the_card(card, tmp_path):
    from engine.evaluation.evaluate import evaluate
    report = evaluate(CHECKPOINTS, "test", out_dir=tmp_path, limit=card["ci_sample_size"])
    assert report["count"] == card["ci_sample_size"] >= 200
    assert report["accuracy"] == pytest.approx(card["ci_sample_accuracy"], abs=0.005)
    assert report["accuracy"] == pytest.approx(card["test_accuracy"], abs=0.04)
    info = json.loads((CHECKPOINTS / "model.json").read_text())
    assert report["threshold"] == pytest.approx(info["threshold"])


def test_shipped_cv_has_one_out_of_fold_prediction_per_non_test_image():
    import csv
    from engine.data.manifest import read_manifest
    from engine.data.sources import relocate
    rows = [r for r in read_manifest(CHECKPOINTS / "manifest.csv") if r.usable]
    with open(CHECKPOINTS / "oof_predictions.csv", newline="") as handle:
        oof = [relocate(r["path"]) for r in csv.DictReader(handle)]
    assert len(oof) == len(set(oof))
    assert {r.path for r in rows if r.split != "test"} == set(oof)
    # Folds are whole duplicate groups: no group is held out by two folds.
    fold_of_group = {}
    for row in rows:
        if row.split != "test":
            assert fold_of_group.setdefault(row.group, row.fold) == row.fold


def test_shipped_model_predicts_with_tensorflow_alone():
    import tensorflow as tf
    loaded = tf.saved_model.load(str(CHECKPOINTS / "export"))
    size = int(loaded.image_size.numpy())
    pixels = np.zeros((2, size, size, 3), np.uint8)  # the contract takes uint8 pixels
    probability = loaded.signatures["serving_default"](pixels=tf.constant(pixels))["probability"].numpy()
    assert probability.shape == (2,) and np.all((0 <= probability) & (probability <= 1))


def test_the_shipped_recipe_is_what_trained_the_shipped_model():
    """python -m engine.cv --shipped-recipe (and the Train form's first recipe) must
    reproduce the shipped model's settings field by field."""
    from engine.config import TrainConfig, shipped_config
    stored = TrainConfig.from_dict(json.loads((CHECKPOINTS / "config.json").read_text())["config"])
    # engine.cv fixes the epoch budget. Where decoded images are kept is storage, not the
    # recipe ("auto" keeps Br35H in memory). The shipped CV kept the groups of the model
    # shipped before it (--twin-groups checkpoints/manifest.csv, then v9's), a pair
    # confirmed by eye (--twin-pairs) and v14's split (--keep-split, named in the shipped
    # copy by checkpoints/manifest.csv, which holds the same split; the model card says so).
    assert stored.twin_model == "" and stored.twin_groups == stored.keep_split == "checkpoints/manifest.csv"
    assert stored.dedup_flips is True
    assert stored.replace(cache="auto") == shipped_config(
        best_metric="last", twin_groups="checkpoints/manifest.csv", twin_pairs="reviews/br35h_same_slice.csv",
        keep_split="checkpoints/manifest.csv")


def test_the_shipped_split_is_rebuilt_from_the_shipped_files_alone():
    """The shipped split came from groups of earlier manifests and a pair confirmed by
    eye; those groups live on in checkpoints/manifest.csv. A fresh scan of Br35H with the
    shipped config (the flip-aware copy test, the reviewed pair) that keeps those groups
    (--twin-groups) and that split (--keep-split) gives every shipped group back exactly,
    no group more or less, and every image its side: the split is reproducible on a
    fresh machine, and the copy test of today finds no copy across it (a copy across
    two shipped groups would merge them)."""
    from engine.config import TrainConfig
    from engine.data.manifest import read_manifest
    from engine.training.preparation import scan
    stored = TrainConfig.from_dict(json.loads((CHECKPOINTS / "config.json").read_text())["config"])
    manifest = str(CHECKPOINTS / "manifest.csv")
    assert json.loads((CHECKPOINTS / "data_summary.json").read_text())["dedup_flips"]  # dealt flip-aware
    rows, summary = scan(stored.replace(twin_groups=manifest, keep_split=manifest,
                                        twin_pairs=str(ROOT / stored.twin_pairs)))
    shipped = {row.path: row for row in read_manifest(manifest)}
    usable = [row for row in rows if row.usable]
    assert len(usable) == len(shipped) == 3000
    assert summary["kept_split"]["matched_images"] == 3000
    assert summary["kept_split"]["moved_into_test"] == summary["kept_split"]["moved_out_of_test"] == []
    assert [row.split == "test" for row in usable] == [shipped[row.path].split == "test" for row in usable]
    rebuilt_group_of = {row.path: row.group for row in usable}
    for group in {row.group for row in shipped.values()}:
        members = [path for path, row in shipped.items() if row.group == group]
        assert len({rebuilt_group_of[path] for path in members}) == 1, members
    assert summary["groups"] == len({row.group for row in shipped.values()})
    # Issue 28: No13 and its neighbouring slices no1246 and no1264 are on one side.
    side = {Path(row.path).name: (row.split, row.fold) for row in shipped.values()}
    assert side["No13.jpg"] == side["no1246.jpg"] == side["no1264.jpg"]


def test_predict_json_flags_inputs_that_are_not_brain_slices_and_passes_br35h_slices(tmp_path):
    """Issue #9's bar, on the shipped model through the CLI a user runs: a smooth 16-bit
    gradient, colour noise and a checkerboard are out of distribution; ordinary Br35H
    test slices of both classes are not (a sample spaced evenly over the test split)."""
    import subprocess
    import sys
    from PIL import Image
    from engine.data.manifest import read_manifest, rows_for_split
    rng = np.random.default_rng(0)
    Image.fromarray(gradient_16bit(256)).save(tmp_path / "gradient16.png")
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "colour_noise.png")
    checker = ((np.indices((256, 256)) // 32).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(checker).save(tmp_path / "checkerboard.png")
    synthetic = [tmp_path / n for n in ("gradient16.png", "colour_noise.png", "checkerboard.png")]
    test_rows = rows_for_split(read_manifest(CHECKPOINTS / "manifest.csv"), "test")
    slices = []
    for label in (0, 1):
        of_class = [r for r in test_rows if r.label == label]
        slices += [of_class[int(i)].path for i in np.linspace(0, len(of_class) - 1, 10).round()]
    out = subprocess.run([sys.executable, "-m", "engine.predict", "--json", *map(str, synthetic), *slices],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(synthetic) + len(slices) == 23
    flags = [r["out_of_distribution"] for r in records]
    assert flags[:3] == [True, True, True], records[:3]
    # The test split shares no duplicate group or twin with training, and 1.5% of it lies
    # just past the pixel check's threshold (see the next test): at most one of these 20.
    assert sum(flags[3:]) <= 1, [r for r in records[3:] if r["out_of_distribution"]]
    # A flagged image still gets its probability beside the flag.
    assert all(0.0 <= r["probability"] <= 1.0 for r in records)


def test_predict_neighbours_recognises_a_training_slice_and_not_other_sources(tmp_path):
    """Issue 20's bar through the CLI: a Br35H training slice (and a re-encoded copy of
    one) finds its own duplicate group first and is "seen in training"; slices from
    other sources (pydicom's MR and CT samples, nibabel's MR volume, a synthetic slice)
    are not."""
    import subprocess
    import sys
    from pathlib import Path

    import nibabel
    from PIL import Image
    from pydicom.data import get_testdata_file

    from engine.data.imageio import decode_path
    from engine.data.manifest import read_manifest
    rows = [r for r in read_manifest(CHECKPOINTS / "manifest.csv") if r.usable and r.split != "test"]
    sizes = {}
    for r in rows:
        sizes[r.group] = sizes.get(r.group, 0) + 1
    member = next(r for r in rows if sizes[r.group] > 3)
    copy = tmp_path / "reencoded_copy.jpg"
    Image.fromarray(decode_path(member.path)).save(copy, quality=85)  # not the pool's file
    rng = np.random.default_rng(3)
    blob = np.zeros((256, 256), np.uint8)
    yy, xx = np.mgrid[:256, :256]
    blob[(yy - 128) ** 2 / 90 ** 2 + (xx - 128) ** 2 / 70 ** 2 <= 1] = 90
    blob = np.clip(blob + rng.normal(0, 12, blob.shape), 0, 255).astype(np.uint8)
    Image.fromarray(blob).save(tmp_path / "synthetic_head.png")
    others = [get_testdata_file("MR_small.dcm"), get_testdata_file("CT_small.dcm"),
              str(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"),
              str(tmp_path / "synthetic_head.png")]
    out = subprocess.run([sys.executable, "-m", "engine.predict", "--json", "--neighbours", "5",
                          member.path, str(copy), *others], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    own, reencoded, foreign = records[0], records[1], records[2:]
    for record in (own, reencoded):
        assert len(record["neighbours"]) == 5
        assert record["neighbours"][0]["group"] == member.group, record["neighbours"][:2]
        assert record["seen_in_training"] is True
    assert len(foreign) >= 4  # the NIfTI volume gives several slices
    assert not any(r["seen_in_training"] for r in foreign), [
        (r["path"], r["neighbours"][0]["similarity"]) for r in foreign if r["seen_in_training"]]


def test_pictures_that_are_no_scanner_slice_are_flagged_by_their_pixels():
    """The pixel checks (engine.serving.input_check) flag a colour photograph, a flat
    field and a bright page, with the reason, and pass every Br35H test slice sampled."""
    import io as _io

    from PIL import Image as _Image
    from sklearn.datasets import load_sample_images

    from engine.data.manifest import read_manifest, rows_for_split
    from engine.serving.input_check import findings
    from engine.serving.inference import load_model, predict_files
    flower = load_sample_images().images[1]
    flat = np.full((128, 128, 3), 90, np.uint8)
    page = np.full((200, 160, 3), 250, np.uint8)
    page[40:60, 20:140] = 0
    for picture, words in ((flower, "colour picture"), (flat, "flat field"), (page, "mostly bright")):
        assert any(words in reason for reason, score in findings(picture) if score > 1), words
    test_rows = rows_for_split(read_manifest(CHECKPOINTS / "manifest.csv"), "test")
    sampled = test_rows[::20]
    from engine.data.imageio import decode_path
    assert all(findings(decode_path(r.path)) == [] for r in sampled)

    def png(rgb):
        buffer = _io.BytesIO()
        _Image.fromarray(rgb).save(buffer, "PNG")
        return buffer.getvalue()
    result = predict_files(load_model(CHECKPOINTS), [("flower.png", png(flower))])[0]
    assert result.out_of_distribution is True and result.ood_score > 1
    assert "colour picture" in result.ood_reason


def test_grey_photographs_are_flagged_by_their_appearance_and_test_slices_pass():
    """Issue 21, item 3: the feature flag let a grey photograph of a flower through
    (0.92, 0.97); the shipped model's appearance statistics (engine.serving.appearance)
    flag it, in grey and cropped, with the reason; the test split (brain MRI the model
    never trained on) mostly passes the same pixel checks. The threshold passes 99% of
    each member's held-out fold by construction; on the test split of the twin-merged groups
    7 of 453 slices (1.5%, in 6 of 104 groups) lie past it, 6 of them by less than 1.5x
    (v8 on its split: 15 of 450; v6 on its own leakier split: 1.8%): <= 4%."""
    from PIL import Image as _Image
    from sklearn.datasets import load_sample_images

    from engine.data.imageio import decode_path
    from engine.data.manifest import read_manifest, rows_for_split
    from engine.serving.inference import load_model
    model = load_model(CHECKPOINTS)
    assert model.appearance is not None and model.appearance.means.shape[0] == model.members
    flower = np.asarray(_Image.fromarray(load_sample_images().images[1]).convert("L"))
    flower = np.repeat(flower[..., None], 3, axis=2)
    for picture in (flower, flower[100:400, 150:450]):
        found = model.pixel_findings(np.ascontiguousarray(picture))
        assert any("its pixels" in reason and score > 1 for reason, score in found), found
    test_rows = rows_for_split(read_manifest(CHECKPOINTS / "manifest.csv"), "test")
    flagged = [r.path for r in test_rows if model.pixel_findings(decode_path(r.path))]
    assert len(flagged) <= 0.04 * len(test_rows), (len(flagged), flagged[:5])
    # Exposure is not what it measures: the same slices 30% darker mostly pass too.
    sampled = test_rows[::4]
    darker = [r.path for r in sampled
              if model.pixel_findings((decode_path(r.path) * 0.7).astype(np.uint8))]
    assert len(darker) <= 0.05 * len(sampled), (len(darker), darker[:5])


def test_the_flagged_share_an_evaluation_reports_counts_the_pixel_checks(tmp_path):
    """Evaluate's "share flagged out-of-distribution" is what Predict stops: the grey
    flower, darkened to a third, passes the feature flag (0.93 with v15; v9 passed it
    undarkened) and is counted through its pixels; a test slice that passes both is not."""
    from PIL import Image as _Image
    from sklearn.datasets import load_sample_images

    from engine.data.imageio import decode_path
    from engine.data.manifest import read_manifest, rows_for_split
    from engine.evaluation.evaluate import flagged_share
    from engine.serving.inference import load_model
    model = load_model(CHECKPOINTS)
    flower = tmp_path / "grey_flower.png"
    _Image.fromarray(load_sample_images().images[1]).convert("L").point(lambda v: v // 3).save(flower)
    rows = rows_for_split(read_manifest(CHECKPOINTS / "manifest.csv"), "test")[:6]
    slice_path = next(r.path for r in rows if not model.pixel_findings(decode_path(r.path)))
    paths = [str(flower), slice_path]
    features = model.predict_pixels(np.stack([model.model_input(decode_path(p)) for p in paths]))["features"]
    flags, _ = model.ood_flags(features)
    assert not flags.any(), "precondition: the feature flag passes both"
    assert flagged_share(model, paths, features) == 0.5
