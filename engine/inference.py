"""Loading a trained model and predicting: the API that ``engine.predict``,
``engine.evaluate`` and the dashboard share.

A model folder holds ``export/`` (a SavedModel with ``serving_default`` and
``explain`` signatures) and ``model.json`` (image size, decision threshold and
temperature chosen on validation data). The shipped model is ``checkpoints/``; any
finished run folder has the same layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from engine.calibration import calibrated
from engine.imageio import ImageDecodeError, decode_rgb, resize_rgb
from engine.runs import EXPORT_DIR, MODEL_INFO_FILE, PROJECT_ROOT

SHIPPED_MODEL_DIR = PROJECT_ROOT / "checkpoints"
CLASS_NAMES = {0: "no tumor", 1: "tumor"}


class ModelNotFoundError(FileNotFoundError):
    pass


@dataclass
class LoadedModel:
    directory: Path
    image_size: int
    threshold: float
    temperature: float
    info: dict
    serve: object = field(repr=False)
    explain_fn: object = field(repr=False)

    def logits(self, images: np.ndarray) -> np.ndarray:
        out = self.serve(images=tf.convert_to_tensor(images, tf.float32))
        return out["logit"].numpy()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Calibrated tumor probabilities (temperature applied) for [N, S, S, 3] in [0, 1]."""
        return calibrated(self.logits(images), self.temperature)

    def explain(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities [N], Grad-CAM maps [N, S, S] in [0, 1])."""
        out = self.explain_fn(images=tf.convert_to_tensor(images, tf.float32))
        return calibrated(out["logit"].numpy(), self.temperature), out["cam"].numpy()


def load_model(directory: str | Path | None = None) -> LoadedModel:
    """Load the model in ``directory`` (default: the shipped model)."""
    directory = Path(directory or SHIPPED_MODEL_DIR)
    export = directory / EXPORT_DIR
    if not (export / "saved_model.pb").exists():
        raise ModelNotFoundError(f"no exported model in {directory} (expected {export}/saved_model.pb)")
    info_path = directory / MODEL_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    loaded = tf.saved_model.load(str(export))
    image_size = int(info.get("image_size") or loaded.image_size.numpy())
    model = LoadedModel(directory=directory, image_size=image_size,
                        threshold=float(info.get("threshold", 0.5)),
                        temperature=float(info.get("temperature", 1.0)), info=info,
                        serve=loaded.signatures["serving_default"],
                        explain_fn=loaded.signatures["explain"])
    model._saved = loaded  # keep the trackable object alive with its signatures
    return model


@dataclass
class Prediction:
    name: str
    probability: float | None = None
    predicted_label: int | None = None
    error: str = ""
    image: np.ndarray | None = field(default=None, repr=False)  # decoded RGB, original size
    cam: np.ndarray | None = field(default=None, repr=False)

    @property
    def predicted_class(self) -> str:
        return "" if self.predicted_label is None else CLASS_NAMES[self.predicted_label]


def predict_files(model: LoadedModel, items: list[tuple[str, bytes]], *, explain: bool = False,
                  batch_size: int = 16) -> list[Prediction]:
    """Predict every (name, bytes) item; a bad file gets its own error and the others
    are still predicted."""
    results = [Prediction(name) for name, _ in items]
    ready: list[tuple[int, np.ndarray]] = []
    for index, (_, data) in enumerate(items):
        try:
            rgb = decode_rgb(data)
        except ImageDecodeError as err:
            results[index].error = str(err)
            continue
        results[index].image = rgb
        ready.append((index, resize_rgb(rgb, model.image_size).astype(np.float32) / 255.0))
    for start in range(0, len(ready), batch_size):
        chunk = ready[start:start + batch_size]
        batch = np.stack([image for _, image in chunk])
        if explain:
            probabilities, cams = model.explain(batch)
        else:
            probabilities, cams = model.probabilities(batch), [None] * len(chunk)
        for (index, _), probability, cam in zip(chunk, probabilities, cams):
            results[index].probability = float(probability)
            results[index].predicted_label = int(probability >= model.threshold)
            results[index].cam = cam
    return results
