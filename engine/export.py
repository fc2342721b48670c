"""Exporting a trained model as a SavedModel that ``tf.saved_model.load`` alone can
serve: ``serving_default`` maps a batch of [0, 1] images to the tumor probability and
``explain`` adds the Grad-CAM map. Threshold and temperature live beside it in
model.json, because they are chosen after training, on validation data.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from engine.explain import grad_cam


class ServingModule(tf.Module):
    def __init__(self, model, image_size: int):
        super().__init__(name="serving")
        self.model = model
        self.image_size = tf.Variable(image_size, trainable=False, name="image_size")
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.explain = tf.function(self._explain, input_signature=[spec])

    def _serve(self, images):
        logits, _ = self.model(images, training=False)
        return {"probability": tf.sigmoid(logits), "logit": logits}

    def _explain(self, images):
        logits, cam = grad_cam(self.model, images)
        return {"probability": tf.sigmoid(logits), "logit": logits, "cam": cam}


def export_saved_model(model, image_size: int, directory: str | Path) -> Path:
    directory = Path(directory)
    module = ServingModule(model, image_size)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    tf.saved_model.save(module, str(tmp), signatures={
        "serving_default": module.serve, "explain": module.explain})
    if directory.exists():
        import shutil
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def write_model_info(path: str | Path, info: dict) -> None:
    from engine.runs import write_json_atomic
    write_json_atomic(path, info)


def read_model_info(path: str | Path) -> dict:
    with open(path) as handle:
        return json.load(handle)
