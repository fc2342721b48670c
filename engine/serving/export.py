"""Exporting a trained model as a SavedModel that ``tf.saved_model.load`` alone can
serve: ``serving_default`` maps a batch of [0, 1] images to the tumor probability and
``explain`` adds the Grad-CAM map. Threshold and temperature live beside it in
model.json, because they are chosen after training, on validation data.

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


class ServingModule(tf.Module):
    """One model, or a fold ensemble: the logit is the mean of the members' logits and
    ``member_logits`` [B, K] carries each member's, so a reader can report their
    spread. Grad-CAM is the members' mean map, rescaled to [0, 1] per image."""

    def __init__(self, models, image_size: int, flip_tta: bool = True):
        super().__init__(name="serving")
        self.members = list(models) if isinstance(models, (list, tuple)) else [models]
        if not self.members:
            raise ValueError("an export needs at least one model")
        self.flip_tta = bool(flip_tta)
        self.image_size = tf.Variable(image_size, trainable=False, name="image_size")
        self.member_count = tf.Variable(len(self.members), trainable=False, name="member_count")
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
        # autograph=False, as for the train steps (engine/steps.py): no branch depends on a
        # tensor's value, and converting every member's code slowed export and loading.
        self.serve = tf.function(self._serve, input_signature=[spec], autograph=False)
        self.explain = tf.function(self._explain, input_signature=[spec], autograph=False)

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


def export_saved_model(models, image_size: int, directory: str | Path, flip_tta: bool = True) -> Path:
    """Write the SavedModel of one model or a list of them (an ensemble) to a temp
    folder, then swap it in, so a reader never loads a half-written export."""
    directory = Path(directory)
    module = ServingModule(models, image_size, flip_tta)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tf.saved_model.save(module, str(tmp), signatures={
        "serving_default": module.serve, "explain": module.explain})
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def restore_best_model(folder: str | Path, checkpoint: str | None = None):
    """(config, model) of a run's best checkpoint, built outside any strategy so it
    holds plain variables."""
    from engine import runs
    from engine.config import TrainConfig
    from engine.model.resnet import build_model
    folder = Path(folder)
    config = TrainConfig.from_dict(runs.read_config_file(folder)["config"])
    checkpoint = checkpoint or tf.train.latest_checkpoint(str(folder / runs.BEST_DIR))
    if not checkpoint:
        raise FileNotFoundError(f"no best checkpoint in {folder / runs.BEST_DIR}")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return config, model, checkpoint


def export_run(folder: str | Path, checkpoint: str | None = None, flip_tta: bool = True) -> Path:
    """Export a run's best checkpoint (or ``checkpoint``) and update model.json. A
    changed export invalidates the stored calibration, which evaluation refits."""
    from engine import runs
    folder = Path(folder)
    config, model, checkpoint = restore_best_model(folder, checkpoint)
    export_saved_model(model, config.image_size, folder / runs.EXPORT_DIR, flip_tta)
    info_path = folder / runs.MODEL_INFO_FILE
    info = runs.read_json(info_path, {}) or {}
    info.update(model_info(config, flip_tta, members=1))
    info.update({"checkpoint": checkpoint, "threshold": 0.5, "temperature": 1.0})
    info.pop("temperature_fitted", None)
    runs.write_json_atomic(info_path, info)
    return folder / runs.EXPORT_DIR


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
