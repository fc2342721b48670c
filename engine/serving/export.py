"""Exporting a trained model as a SavedModel that is the product's contract with the
outside world: ``tf.saved_model.load`` or TensorFlow Serving alone can use it, with no
engine code and no preprocessing of the caller's own.

Signatures (all return the calibrated ``probability``, the ``predicted`` class at the
stored threshold, the ``threshold``, each ensemble member's calibrated probability
``member_probabilities`` and their standard deviation ``spread``, the mean ``logit``,
``member_logits`` and the pooled ``features``):

- ``serving_default``: ``pixels`` uint8 [N, S, S, 3] at the model's own size S (the
  ``image_size`` variable); scaled to [0, 1] inside.
- ``serving_bytes``: ``image_bytes`` string [N], encoded PNG, JPEG, BMP or GIF files;
  decoded to RGB, resized to S x S as the engine does (bilinear with antialiasing, the
  closest TensorFlow op to PIL's bilinear resize; the difference is measured in
  tests/test_serving_contract.py), rounded to uint8 and scaled inside.
- ``serving_float``: [0, 1] float images at S (what the engine's own tf.data pipeline
  feeds, for evaluation), same outputs.
- ``serving_prepared``: ``pixels`` uint8 [N, S, S, 3] already framed as the engine
  frames them (cropped to the head when the model crops, PIL-resized): what
  engine.serving.inference feeds, so no image is cropped twice.
- ``explain``: the same input, the same outputs plus the Grad-CAM map ``cam``.

Every signature applies the stored temperature, threshold, refer band and conformal
quantiles itself: engine.predict and the dashboard read these outputs (engine.serving.
inference), so scaling and calibration are written once, here.

The threshold and temperature are chosen after training, on validation data; they are
stored in model.json and stamped into the export (variables ``threshold``,
``temperature``, ``export_version``) once chosen.

``python -m engine.serving.export RUN_DIR`` re-exports a run's best checkpoint.

Flip test-time augmentation (on by default): the logit is the mean of the image's and
its left-right mirror's. Axial brain slices are roughly symmetric and a tumor may sit
on either side, so the mirror is an equally valid view; averaging the two steadies
the prediction (on the shipped model's validation split it is measured in the model
card).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import tensorflow as tf

from engine import layout, runs
from engine.model.resnet import build_model
from engine.request import RunRequest, stored_request
from engine.serving.explain import grad_cam


def predict_logits(model, images, flip_tta: bool):
    """(inference-mode logits, averaged with the mirrored image's when ``flip_tta``;
    the plain image's pooled last feature map [B, C], for the OOD flag), from the same
    forward pass."""
    logits, feature_map = model(images, training=False)
    if flip_tta:
        mirrored, _ = model(tf.reverse(images, axis=[2]), training=False)
        logits = (logits + mirrored) / 2.0
    return logits, tf.reduce_mean(feature_map, axis=[1, 2])


def explain_logits(model, images, flip_tta: bool):
    """(logits, Grad-CAM [B, H, W] in [0, 1]) with the same averaging as predict_logits."""
    logits, cam = grad_cam(model, images)
    if flip_tta:
        mirrored_logits, mirrored_cam = grad_cam(model, tf.reverse(images, axis=[2]))
        logits = (logits + mirrored_logits) / 2.0
        cam = (cam + tf.reverse(mirrored_cam, axis=[2])) / 2.0
        cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=[1, 2], keepdims=True))
    return logits, cam


def head_box_graph(image):
    """engine.data.imageio.head_box in graph ops, on one uint8 [H, W, 3] image: rows and
    columns where at least 2% of the pixels are brighter than a tenth of the brightest,
    a 2% margin, the whole image when nothing (or a sliver) is found. Returns
    (top, bottom, left, right) as int32 scalars."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    gray = tf.reduce_mean(tf.cast(image, tf.float32), axis=2)
    peak = tf.reduce_max(gray)
    bright = tf.cast(gray > 0.1 * peak, tf.float32)
    rows = tf.cast(tf.where(tf.reduce_mean(bright, axis=1) >= 0.02)[:, 0], tf.int32)
    cols = tf.cast(tf.where(tf.reduce_mean(bright, axis=0) >= 0.02)[:, 0], tf.int32)
    found = tf.logical_and(peak > 0, tf.logical_and(tf.size(rows) > 0, tf.size(cols) > 0))
    safe_rows = tf.concat([rows, [0, height - 1]], 0)  # never empty, for the gathers below
    safe_cols = tf.concat([cols, [0, width - 1]], 0)
    top, bottom = safe_rows[0], safe_rows[tf.maximum(tf.size(rows) - 1, 0)] + 1
    left, right = safe_cols[0], safe_cols[tf.maximum(tf.size(cols) - 1, 0)] + 1
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    big_enough = tf.logical_and(tf.cast(bottom - top, tf.float32) >= 0.1 * h,
                                tf.cast(right - left, tf.float32) >= 0.1 * w)
    # Python's round() rounds half to even, as tf.round does.
    pad_y, pad_x = tf.cast(tf.round(0.02 * h), tf.int32), tf.cast(tf.round(0.02 * w), tf.int32)
    use = tf.logical_and(found, big_enough)
    return (tf.where(use, tf.maximum(0, top - pad_y), 0), tf.where(use, tf.minimum(height, bottom + pad_y), height),
            tf.where(use, tf.maximum(0, left - pad_x), 0), tf.where(use, tf.minimum(width, right + pad_x), width))


def crop_to_head_graph(image):
    """engine.data.imageio.crop_to_head in graph ops: the head box, padded with black to
    a square around its centre."""
    top, bottom, left, right = head_box_graph(image)
    crop = image[top:bottom, left:right]
    height, width = bottom - top, right - left
    side = tf.maximum(height, width)
    return tf.image.pad_to_bounding_box(crop, (side - height) // 2, (side - width) // 2, side, side)


class ServingModule(tf.Module):
    """One model, or a fold ensemble: the logit is the mean of the members' logits and
    ``member_logits`` [B, K] carries each member's, so a reader can report their
    spread. Grad-CAM is the members' mean map, rescaled to [0, 1] per image."""

    def __init__(self, models, image_size: int, flip_tta: bool = True, threshold: float = 0.5,
                 temperature: float = 1.0, refer_margin: float = 0.0, conformal_q=(1.0, 1.0),
                 crop_to_head: bool = False):
        super().__init__(name="serving")
        self.members = list(models) if isinstance(models, (list, tuple)) else [models]
        if not self.members:
            raise ValueError("an export needs at least one model")
        self.flip_tta = bool(flip_tta)
        self._contract(image_size, len(self.members), threshold, temperature, refer_margin, conformal_q,
                       crop_to_head)

    def _contract(self, image_size: int, members: int, threshold: float, temperature: float,
                  refer_margin: float, conformal_q, crop_to_head: bool) -> None:
        """The contract's variables and signatures (shared with RestampedModule)."""
        # A model trained on head crops crops here too: a client sends whole images.
        self.crop = bool(crop_to_head)
        self.crop_to_head = tf.Variable(self.crop, trainable=False, name="crop_to_head")
        self.image_size = tf.Variable(image_size, trainable=False, name="image_size")
        self.member_count = tf.Variable(members, trainable=False, name="member_count")
        self.threshold = tf.Variable(float(threshold), trainable=False, name="threshold")
        self.temperature = tf.Variable(float(temperature), trainable=False, name="temperature")
        # engine.serving.refer: logit distance from the threshold under which the decision
        # is "refer" (0 = never), and the class-conditional conformal quantiles.
        self.refer_margin = tf.Variable(float(refer_margin), trainable=False, name="refer_margin")
        self.conformal_q = tf.Variable([float(q) for q in conformal_q], trainable=False, name="conformal_q")
        self.export_version = tf.Variable(EXPORT_VERSION, trainable=False, name="export_version")
        self.size = int(image_size)
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        # uint8 pixels of any size: cropped (if the model crops) and resized inside.
        pixels = tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")
        sized = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="pixels")
        encoded = tf.TensorSpec([None], tf.string, name="image_bytes")
        # autograph=False, as for the train steps (engine/steps.py): no branch depends on a
        # tensor's value, and converting every member's code slowed export and loading.
        self.serve = tf.function(self._serve_float, input_signature=[spec], autograph=False)
        self.explain = tf.function(self._explain_pixels, input_signature=[sized], autograph=False)
        self.serve_prepared = tf.function(self._from_model_pixels, input_signature=[sized], autograph=False)
        self.serve_pixels = tf.function(self._serve_pixels, input_signature=[pixels], autograph=False)
        self.serve_bytes = tf.function(self._serve_bytes, input_signature=[encoded], autograph=False)

    def _calibrated(self, outputs):
        """The contract's outputs from the float path's: temperature and threshold applied."""
        member_probabilities = tf.sigmoid(outputs["member_logits"] / self.temperature)
        probability = tf.sigmoid(outputs["logit"] / self.temperature)
        predicted = tf.cast(probability >= self.threshold, tf.int32)
        clipped = tf.clip_by_value(probability, 1e-7, 1 - 1e-7)
        threshold = tf.clip_by_value(self.threshold, 1e-7, 1 - 1e-7)
        distance = tf.abs(tf.math.log(clipped / (1 - clipped)) - tf.math.log(threshold / (1 - threshold)))
        refer = tf.logical_and(self.refer_margin > 0, distance < self.refer_margin)
        return {"probability": probability, "predicted": predicted,
                # 0 no tumor, 1 tumor, 2 refer (engine.serving.refer; out-of-distribution
                # checks live outside the graph and can only withhold a verdict further)
                "decision": tf.where(refer, 2, predicted),
                # [B, 2]: "no tumor" and "tumor" in the conformal prediction set
                "prediction_set": tf.stack([probability <= self.conformal_q[0],
                                            1 - probability <= self.conformal_q[1]], axis=1),
                "threshold": tf.fill(tf.shape(probability), self.threshold),
                "member_probabilities": member_probabilities,
                "spread": tf.math.reduce_std(member_probabilities, axis=1),
                "logit": outputs["logit"], "member_logits": outputs["member_logits"],
                "features": outputs["features"]}

    def _prepare_one(self, image):
        """One uint8 [H, W, 3] image as the engine prepares it (engine.data.imageio.
        prepare_rgb): cropped to the head if the model was trained so, then resized
        (bilinear with antialiasing, the closest op to PIL's resize)."""
        if self.crop:
            image = crop_to_head_graph(image)
        resized = tf.image.resize(tf.cast(image, tf.float32)[None], [self.size, self.size],
                                  method="bilinear", antialias=True)[0]
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    def _prepared(self, pixels):
        shape = tf.shape(pixels)
        ready = tf.logical_and(tf.logical_and(tf.equal(shape[1], self.size), tf.equal(shape[2], self.size)),
                               tf.logical_not(self.crop_to_head))
        return tf.cond(ready, lambda: tf.ensure_shape(pixels, [None, self.size, self.size, 3]),
                       lambda: tf.map_fn(self._prepare_one, pixels,
                                         fn_output_signature=tf.TensorSpec([self.size, self.size, 3], tf.uint8)))

    def _serve_pixels(self, pixels):
        return self._from_model_pixels(self._prepared(pixels))

    def _serve_float(self, images):
        return self._calibrated(self._serve(images))

    def _explain_pixels(self, pixels):
        out = self._explain_raw(pixels)
        return {**self._calibrated(out), "cam": out["cam"]}

    def _explain_raw(self, pixels):
        """(uncalibrated) logits, members, features and Grad-CAM of uint8 pixels at S."""
        return self._explain(tf.cast(pixels, tf.float32) / 255.0)

    def _from_model_pixels(self, pixels):
        return self._calibrated(self._serve(tf.cast(pixels, tf.float32) / 255.0))

    def _decode_one(self, data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])
        return self._prepare_one(image)

    def _serve_bytes(self, image_bytes):
        pixels = tf.map_fn(self._decode_one, image_bytes,
                           fn_output_signature=tf.TensorSpec([self.size, self.size, 3], tf.uint8))
        return self._from_model_pixels(pixels)

    def _serve(self, images):
        outputs = [predict_logits(m, images, self.flip_tta) for m in self.members]
        members = tf.stack([logits for logits, _ in outputs], axis=1)
        logits = tf.reduce_mean(members, axis=1)
        return {"probability": tf.sigmoid(logits), "logit": logits, "member_logits": members,
                "features": tf.stack([features for _, features in outputs], axis=1)}

    def _explain(self, images):
        explained = [explain_logits(m, images, self.flip_tta) for m in self.members]
        members = tf.stack([logits for logits, _ in explained], axis=1)
        logits = tf.reduce_mean(members, axis=1)
        cam = tf.add_n([cam for _, cam in explained]) / float(len(explained))
        cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=[1, 2], keepdims=True))
        # Grad-CAM runs its own forward pass; the pooled features for the OOD flag take
        # one more, inference mode, per member.
        features = tf.stack([predict_logits(m, images, False)[1] for m in self.members], axis=1)
        return {"probability": tf.sigmoid(logits), "logit": logits, "cam": cam,
                "member_logits": members, "features": features}


# 2: uint8 serving_default, serving_bytes, calibration inside; 3: refer band, sets;
# 4: every signature calibrated, ``explain`` on uint8 pixels (engine.serving.inference
# reads the calibrated outputs instead of applying the calibration itself).
EXPORT_VERSION = 4


def version_of(loaded) -> int:
    """A loaded SavedModel's export version (1: before the variable existed)."""
    return int(loaded.export_version.numpy()) if hasattr(loaded, "export_version") else 1


class RestampedModule(ServingModule):
    """An existing export with new calibration variables: the shipped model carries no
    fold checkpoints to export again from, so its SavedModel is loaded, wrapped and
    saved with the threshold, temperature, refer band and conformal quantiles of its
    model.json. The members' graphs are the loaded ones, unchanged."""

    def __init__(self, loaded, image_size: int, members: int, threshold: float, temperature: float,
                 refer_margin: float, conformal_q, crop_to_head: bool = False):
        tf.Module.__init__(self, name="serving")
        self.loaded = loaded
        self.loaded_version = version_of(loaded)
        self._contract(image_size, members, threshold, temperature, refer_margin, conformal_q, crop_to_head)

    def _serve(self, images):
        return self.loaded.signatures["serving_float"](images=images)

    def _explain_raw(self, pixels):
        if self.loaded_version >= 4:  # its explain takes pixels (and calibrates; recalibrated here)
            return self.loaded.signatures["explain"](pixels=pixels)
        return self.loaded.signatures["explain"](images=tf.cast(pixels, tf.float32) / 255.0)


def restamp_export(folder: str | Path) -> Path:
    """Save ``folder``'s export again with the calibration of its model.json (see
    RestampedModule), swapped in only once written."""
    folder = Path(folder)
    info = runs.read_json(folder / layout.MODEL_INFO, {}) or {}
    loaded = tf.saved_model.load(str(folder / layout.EXPORT))
    band, conformal = info.get("refer_band") or {}, info.get("conformal") or {}
    module = RestampedModule(loaded, int(info.get("image_size") or loaded.image_size.numpy()),
                             int(loaded.member_count.numpy()), float(info.get("threshold", 0.5)),
                             float(info.get("temperature", 1.0)), float(band.get("margin", 0.0)),
                             conformal.get("q", (1.0, 1.0)), bool(info.get("crop_to_head", False)))
    return _save(module, folder / layout.EXPORT)


def export_saved_model(models, image_size: int, directory: str | Path, flip_tta: bool = True,
                       threshold: float = 0.5, temperature: float = 1.0, refer_margin: float = 0.0,
                       conformal_q=(1.0, 1.0), crop_to_head: bool = False) -> Path:
    """Write the SavedModel of one model or a list of them (an ensemble) to a temp
    folder, then swap it in, so a reader never loads a half-written export."""
    module = ServingModule(models, image_size, flip_tta, threshold, temperature, refer_margin, conformal_q,
                           crop_to_head)
    return _save(module, Path(directory))


def _save(module: ServingModule, directory: Path) -> Path:
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tf.saved_model.save(module, str(tmp), signatures={
        "serving_default": module.serve_pixels, "serving_bytes": module.serve_bytes,
        "serving_float": module.serve, "serving_prepared": module.serve_prepared, "explain": module.explain})
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def restore_best_model(folder: str | Path, checkpoint: str | None = None):
    """(config, model) of a run's best checkpoint, built outside any strategy so it
    holds plain variables."""
    folder = Path(folder)
    config = RunRequest.read(folder).config
    checkpoint = checkpoint or tf.train.latest_checkpoint(str(folder / layout.BEST_CHECKPOINT))
    if not checkpoint:
        raise FileNotFoundError(f"no best checkpoint in {folder / layout.BEST_CHECKPOINT}")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return config, model, checkpoint


def export_run(folder: str | Path, checkpoint: str | None = None, flip_tta: bool = True) -> Path:
    """Export a run's best checkpoint (or ``checkpoint``) and update model.json. A
    changed export invalidates the stored calibration, which evaluation refits."""
    folder = Path(folder)
    config, model, checkpoint = restore_best_model(folder, checkpoint)
    export_saved_model(model, config.image_size, folder / layout.EXPORT, flip_tta,
                       crop_to_head=config.crop_to_head)
    info_path = folder / layout.MODEL_INFO
    info = runs.read_json(info_path, {}) or {}
    info.update(model_info(config, flip_tta, members=1))
    info.update({"checkpoint": checkpoint, "threshold": 0.5, "temperature": 1.0})
    info.pop("temperature_fitted", None)
    runs.write_json_atomic(info_path, info)
    return folder / layout.EXPORT


def stamp_calibration(folder: str | Path) -> None:
    """Re-export a run's or a cross-validation's model with the threshold and
    temperature its model.json now holds, so the SavedModel alone gives calibrated
    probabilities and decisions. A CV folder is re-exported from its fold models."""
    folder = Path(folder)
    info = runs.read_json(folder / layout.MODEL_INFO, {}) or {}
    request = stored_request(folder)
    band, conformal = info.get("refer_band") or {}, info.get("conformal") or {}
    extra = (float(band.get("margin", 0.0)), conformal.get("q", (1.0, 1.0)), bool(info.get("crop_to_head", False)))
    if request is not None and request.is_cv and not layout.fold_dirs(folder):
        restamp_export(folder)  # a shipped fold ensemble: no fold checkpoints to export from
        return
    if request is not None and request.is_cv:
        members = [restore_best_model(folder / layout.fold(k))[1] for k in range(request.cv.folds)]
        image_size = request.config.image_size
    else:
        config, model, _ = restore_best_model(folder, info.get("checkpoint"))
        members, image_size = [model], config.image_size
    export_saved_model(members, image_size, folder / layout.EXPORT, bool(info.get("flip_tta", True)),
                       float(info.get("threshold", 0.5)), float(info.get("temperature", 1.0)), *extra)


def model_info(config, flip_tta: bool, members: int) -> dict:
    """What a reader of model.json needs to feed the export: size and preprocessing."""
    return {"image_size": config.image_size, "preset": config.preset, "width": config.width,
            "flip_tta": bool(flip_tta), "crop_to_head": bool(config.crop_to_head),
            "members": int(members)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.serving.export",
                                     description="Re-export a run's best checkpoint as a SavedModel.")
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", help="a specific checkpoint prefix instead of the best")
    parser.add_argument("--no-flip-tta", action="store_true", help="serve the plain logit")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.checkpoint, not args.no_flip_tta)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {path}; run `python -m engine.evaluate --model {args.run_dir} --split test` "
          "to recalibrate and evaluate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
