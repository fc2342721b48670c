"""The SavedModel is the contract: a plain tf.saved_model.load of checkpoints/export,
with no engine import in the calling code, serves encoded files and uint8 pixels and
gives engine.predict's calibrated probability."""

import json
import subprocess
import sys

import numpy as np

from conftest import ROOT

CLIENT = r'''
import json, sys
import numpy as np
import tensorflow as tf
from PIL import Image
model = tf.saved_model.load(sys.argv[1])
paths = sys.argv[2:]
size = int(model.image_size.numpy())
out = model.signatures["serving_bytes"](image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
# serving_default takes whole uint8 images of any size (one at a time: sizes differ) and
# prepares them itself, the head crop included when the model crops.
by_pixels = [float(model.signatures["serving_default"](
    pixels=tf.constant(np.asarray(Image.open(p).convert("RGB"))[None], tf.uint8))["probability"].numpy()[0])
    for p in paths]
print(json.dumps({"bytes": out["probability"].numpy().tolist(), "pixels": by_pixels, "size": size,
                  "predicted": out["predicted"].numpy().tolist(), "threshold": float(out["threshold"].numpy()[0]),
                  "spread": out["spread"].numpy().tolist(), "members": out["member_probabilities"].numpy().shape[1],
                  "version": int(model.export_version.numpy()),
                  "pixel_dtype": model.signatures["serving_default"].structured_input_signature[1]["pixels"].dtype.name}))
'''


def test_a_plain_saved_model_load_serves_files_and_pixels_like_engine_predict(tmp_path):
    from engine.data.manifest import read_manifest, rows_for_split
    rows = rows_for_split(read_manifest(ROOT / "checkpoints" / "manifest.csv"), "test")
    paths = []
    for label in (0, 1):
        of_class = [r.path for r in rows if r.label == label]
        paths += [of_class[int(i)] for i in np.linspace(0, len(of_class) - 1, 6).round()]
    client = tmp_path / "client.py"  # outside the project: no engine on its path
    client.write_text(CLIENT)
    served = subprocess.run([sys.executable, str(client), str(ROOT / "checkpoints" / "export"), *paths],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-2000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    engine = subprocess.run([sys.executable, "-m", "engine.predict", "--json", *paths], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert engine.returncode == 0, engine.stderr[-2000:]
    expected = [json.loads(line)["probability"] for line in engine.stdout.splitlines()]
    info = json.loads((ROOT / "checkpoints" / "model.json").read_text())
    assert result["version"] >= 2 and result["pixel_dtype"] == "uint8" and result["members"] == info["members"]
    assert abs(result["threshold"] - info["threshold"]) < 1e-6
    # Decoding (TensorFlow's vs PIL's) and resizing (tf.image.resize bilinear with
    # antialiasing vs PIL's bilinear) differ by a grey level here and there; on these
    # slices that moves the probability by far less than 0.02, through either signature.
    assert np.max(np.abs(np.array(result["bytes"]) - expected)) < 0.02, (result["bytes"], expected)
    assert np.max(np.abs(np.array(result["pixels"]) - expected)) < 0.02
    assert result["predicted"] == [int(p >= info["threshold"]) for p in result["bytes"]]
    assert all(s >= 0 for s in result["spread"])


CROP_CLIENT = r'''
import json, sys
import numpy as np
import tensorflow as tf
from PIL import Image
model = tf.saved_model.load(sys.argv[1])
paths = sys.argv[2:]
out = model.signatures["serving_bytes"](image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
# serving_default takes whole uint8 images of any size (one at a time: sizes differ here).
by_pixels = [float(model.signatures["serving_default"](
    pixels=tf.constant(np.asarray(Image.open(p).convert("RGB"))[None], tf.uint8))["probability"].numpy()[0])
    for p in paths]
print(json.dumps({"bytes": out["probability"].numpy().tolist(), "pixels": by_pixels,
                  "crop": bool(model.crop_to_head.numpy())}))
'''


def test_a_crop_to_head_model_serves_what_the_engine_predicts(tmp_path):
    """A tiny model trained with crop_to_head on Br35H slices given wide black margins:
    a plain SavedModel client (no engine code) gets engine.predict's probability within
    0.02, because the export crops to the head itself (issue 30: it did not, and served
    answers up to 0.32 away)."""
    from PIL import Image

    from engine.config import tiny_config
    from engine.data.imageio import decode_path
    from engine.data.sources import default_data_dir
    from engine.training.loop import train_and_evaluate
    data = tmp_path / "data"
    for name in ("yes", "no"):
        (data / name).mkdir(parents=True)
        for path in sorted((default_data_dir() / name).iterdir())[::50][:16]:
            rgb = decode_path(str(path))
            height, width = rgb.shape[:2]
            wide = np.zeros((height + 40, width * 2 + 60, 3), np.uint8)  # wide, uneven margins
            wide[10:10 + height, 20:20 + width] = rgb
            Image.fromarray(wide).save(data / name / f"{path.stem}.png")
    run = tmp_path / "run"
    status = train_and_evaluate(tiny_config(data_dir=str(data), crop_to_head=True, image_size=48, epochs=2,
                                                best_metric="last"), run)
    assert status["state"] == "finished", status
    paths = [str(p) for name in ("yes", "no") for p in sorted((data / name).iterdir())[:4]]
    client = tmp_path / "client.py"
    client.write_text(CROP_CLIENT)
    served = subprocess.run([sys.executable, str(client), str(run / "export"), *paths], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-2000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    engine = subprocess.run([sys.executable, "-m", "engine.predict", "--model", str(run), "--json", *paths],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    expected = [json.loads(line)["probability"] for line in engine.stdout.splitlines() if line.startswith("{")]
    assert result["crop"] and len(expected) == len(paths)
    assert np.max(np.abs(np.array(result["bytes"]) - expected)) < 0.02, (result["bytes"], expected)
    assert np.max(np.abs(np.array(result["pixels"]) - expected)) < 0.02, (result["pixels"], expected)


def test_the_engine_serves_the_exports_own_calibrated_outputs():
    """Issue 30: calibration is applied once, in the graph. The shipped export (version
    4) is stamped with model.json's threshold and temperature, so engine.predict reads
    its probability, spread, decision and prediction set; they match the engine's own
    NumPy calibration of the same logits (what it falls back to for an older export or a
    calibration not stamped yet), and a copy with another temperature falls back."""
    from engine.data.manifest import read_manifest, rows_for_split
    from engine.serving.inference import load_model, predict_files
    model = load_model(ROOT / "checkpoints")
    assert model.export_version >= 4 and model.calibrated_in_graph
    rows = rows_for_split(read_manifest(ROOT / "checkpoints" / "manifest.csv"), "test")[::15]
    items = [(r.path, open(r.path, "rb").read()) for r in rows]
    from_graph = predict_files(model, items, explain=True)
    by_numpy = predict_files(model.replace(stamped=()), items)
    assert not model.replace(stamped=()).calibrated_in_graph
    assert not model.replace(temperature=model.temperature * 2).calibrated_in_graph
    assert max(abs(a.probability - b.probability) for a, b in zip(from_graph, by_numpy)) < 1e-5
    assert max(abs(a.uncertainty - b.uncertainty) for a, b in zip(from_graph, by_numpy)) < 1e-5
    assert [a.decision for a in from_graph] == [b.decision for b in by_numpy]
    assert [a.prediction_set for a in from_graph] == [b.prediction_set for b in by_numpy]
    assert {a.decision for a in from_graph} >= {"tumor", "no tumor"}
    hotter = predict_files(model.replace(temperature=model.temperature * 2), items[:4])
    assert [round(h.probability, 6) for h in hotter] != [round(a.probability, 6) for a in from_graph[:4]]
